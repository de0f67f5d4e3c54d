"""`gptcore eval --ckpt DIR [--data FILE]`: a GPT checkpoint's loss, perplexity and bits per
character on its own validation split (re-derived from the checkpoint's metadata) or on
another text, read the way the checkpoint was trained (stream or documents) with its
tokenizer."""
import json
import math
import sys

import torch

from gptcore.training import checkpoint, data, stream
from gptcore.training.args import POSITIVE_INT, option_error
from gptcore.training.objective import evaluate


def stream_batches(meta, tok, block_size, batch_size, data_file):
    """(batches, characters predicted, description): windows tiling the checkpoint's held-out
    stream, or the whole of data_file."""
    if data_file is None:
        text, _ = stream.read_text(meta["data"], argument="--ckpt's data")
        tokens = stream.split(stream.encode(text, tok), meta.get("val_fraction", 0.1))[1]
    else:
        text, _ = stream.read_text(data_file)
        tokens = stream.encode(text, tok)
    batches = stream.eval_batches(tokens, block_size, batch_size)
    targets = [t for b in batches for t in b["targets"].flatten().tolist()]
    return batches, len(tok.decode(targets))


def document_batches(meta, tok, block_size, batch_size, data_file):
    """The same for a documents checkpoint: its held-out documents (the training split
    re-derived) or every line of data_file, each [BOS] + tokens + [BOS]; a document's end
    counts as one character."""
    if data_file is None:
        docs = data.load_names() if meta.get("data", "names") == "names" else \
            data.load_documents(meta["data"], argument="--ckpt's data")
        docs = data.split(docs, meta.get("val_fraction", 0.1), seed=meta.get("split_seed", 0))[1]
    else:
        docs = data.load_documents(data_file, argument="--data")
    seqs = data.encode_documents(docs, tok, block_size)
    batches = [data.packed_batch(seqs[i:i + batch_size]) for i in range(0, len(seqs), batch_size)]
    characters = sum(len(tok.decode(s[1:])) + (s[-1] == tok.bos) for s in seqs)
    return batches, characters


def eval_command(args):
    try:
        model, meta = checkpoint.load_model(args.ckpt, argument="--ckpt")
        if "tokenizer" not in meta:
            raise ValueError(f"--ckpt: expected a checkpoint written by gptcore train (with its "
                             f"tokenizer), got one without in {args.ckpt!r}")
        tok = data.tokenizer_from_dict(meta["tokenizer"])
        mode = meta.get("data_mode", "documents")
        make = stream_batches if mode == "stream" else document_batches
        batches, characters = make(meta, tok, model.config.block_size, args.batch_size,
                                   args.data)
    except ValueError as err:
        print(f"gptcore eval: {option_error(err, text='--data')}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = sum(int((b["targets"] != -1).sum()) for b in batches)
    loss = evaluate(model, batches)                       # nats per token
    bits = loss * tokens / math.log(2)
    result = {"data": args.data or meta.get("data", "names"),
              "split": "all" if args.data else "validation", "mode": mode, "loss": round(loss, 4),
              "perplexity": round(math.exp(loss), 3),
              "bits_per_char": round(bits / max(characters, 1), 4), "tokens": tokens,
              "characters": characters}
    print(f"loss {loss:.4f} nats/token, perplexity {math.exp(loss):.3f}, "
          f"{result['bits_per_char']:.4f} bits/character over {tokens:,} tokens "
          f"({result['split']} of {result['data']})", file=sys.stderr)
    print(json.dumps(result))
    return 0


def add_command(sub):
    """Registers `eval` on the `gptcore` argument parser's subparsers."""
    p = sub.add_parser("eval", help="loss, perplexity, bits per character of a checkpoint",
                       description="Evaluates a checkpoint written by `gptcore train` on its "
                       "validation split or on --data FILE; the last line is JSON.")
    p.add_argument("--ckpt", required=True, metavar="DIR")
    p.add_argument("--data", metavar="FILE", help="another text (a file, or a directory for a "
                   "stream checkpoint), evaluated whole")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, metavar="N",
                   help="windows (or documents) per forward pass (default 64)")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch threads (default: torch's)")
    p.set_defaults(func=eval_command)
