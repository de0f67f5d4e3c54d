"""`gptcore train` and `gptcore sample`: train a preset and sample from its checkpoint
(`gptcore eval` lives in eval_cli.py)."""
import json
import sys

import torch

from gptcore import parallel
from gptcore.training import checkpoint, data, overrides, precision, recipes, stop, stream
from gptcore.training.args import (NONNEGATIVE_FLOAT, NONNEGATIVE_INT, POSITIVE_FLOAT,
                                   POSITIVE_INT, int_at_least, option_error, probability,
                                   writable_directory)


def check_train_args(args):
    """The checks argparse cannot make, before any work: the preset, the data file, the run
    directory (writable; its checkpoints, if any, complete). ValueError naming the option.
    Whether the run directory's model config matches is checked once the model is built."""
    if args.preset not in recipes.RECIPES:
        raise ValueError(f"--preset: expected one of {', '.join(sorted(recipes.RECIPES))}, "
                         f"got {args.preset!r}")
    precision.resolve_device(args.device)
    data_file, mode = recipes.data_source(args)
    if mode == "stream" and data_file is None:
        raise ValueError("--data: expected a text file or directory for --data-mode stream, "
                         "got none")
    if mode == "stream":
        stream.source_files(data_file)
    elif args.data is not None:
        data.load_documents(args.data, argument="--data")
    if recipes.objective_of(args.preset) is not recipes.NextTokenPreset:
        given = [name for name in vars(args) if name in OVERRIDE_NAMES
                 and getattr(args, name) is not None]
        if given or args.config or args.data_mode:
            option = "--" + (given[0].replace("_", "-") if given else
                             "config" if args.config else "data-mode")
            raise ValueError(f"{option}: expected a GPT preset ("
                             f"{', '.join(sorted(recipes.RECIPES))}), got {args.preset!r}, "
                             f"which trains with its own settings")
    model_overrides, _ = overrides.split_overrides(args, recipes.TrainConfig, args.config)
    if recipes.objective_of(args.preset) is recipes.NextTokenPreset:
        # the model these settings make, on the meta device (no memory): a bad combination
        # (n_head not dividing d_model, an odd rotary head_dim) stops here, before the data
        config = recipes.GPTConfig.preset(args.preset, **model_overrides)
        with torch.device("meta"):
            recipes.GPT(config)
    if args.out is not None:
        writable_directory(args.out, "--out")
        if checkpoint.checkpoints(args.out):
            checkpoint.resolve(args.out, "--out")


OVERRIDE_NAMES = {f.name for f in overrides.settable_fields(recipes.GPTConfig)} | \
    {f.name for f in overrides.settable_fields(recipes.TrainConfig)}


def train_command(args):
    try:
        check_train_args(args)
    except ValueError as err:
        print(f"gptcore train: {err}", file=sys.stderr)
        return 2
    args.parallel = parallel.init_from_env()       # under torchrun: one process of the job
    if args.expert_parallel and args.parallel is None:
        print("gptcore train: --expert-parallel needs several processes: launch with "
              "torchrun --nproc_per_node N -m gptcore train ...", file=sys.stderr)
        return 2
    try:
        with stop.requests():                      # SIGTERM/SIGINT: a final checkpoint
            summary = recipes.train_preset(args)
    except ValueError as err:
        print(f"gptcore train: {err}", file=sys.stderr)
        return 2
    except checkpoint.WriteError as err:
        print(f"gptcore train: --out: {err}", file=sys.stderr)
        return 1
    except stop.Interrupted as err:
        if args.parallel is None or args.parallel.logging:
            print(f"gptcore train: {err}; checkpoint {err.checkpoint} (the same command "
                  f"resumes)", file=sys.stderr)
        return 128 + err.signum
    finally:
        if args.parallel is not None:
            torch.distributed.destroy_process_group()
    if args.parallel is None or args.parallel.logging:
        print(json.dumps(summary))
    return 0


STREAM_SAMPLE_TOKENS = 500          # nanoGPT's sample.py default


def stream_prompt(tok, text):
    """The ids a stream model's sample starts from: the prompt, or a newline (nanoGPT's start)
    when the prompt is empty and the vocabulary has one, else BOS."""
    if text:
        ids = tok.encode(text)
        if not ids:
            raise ValueError(f"--prompt: expected text that encodes to tokens, got {text!r}")
        return ids
    try:
        return tok.encode("\n") or [tok.bos]
    except ValueError:
        return [tok.bos]


def sample_stream(args, model, tok):
    """Samples of a stream-trained checkpoint, printed as the tokens come: the prompt, then
    --max-new-tokens tokens (the text may outgrow block_size), samples separated by a rule."""
    prompt = stream_prompt(tok, args.prompt)
    max_new = args.max_new_tokens or STREAM_SAMPLE_TOKENS
    generator = torch.Generator().manual_seed(args.seed)
    samples = []
    for n in range(args.n):
        if n:
            print("\n" + "-" * 40)
        ids = list(prompt)
        text = shown = tok.decode(ids)
        print(text, end="", flush=True)
        for token in model.stream(prompt, max_new, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, generator=generator,
                                  exclude=[tok.bos]):
            ids.append(token)
            text = tok.decode(ids)
            # byte-level BPE can split a character over tokens: wait until it is whole
            if not text.endswith("\ufffd"):
                print(text[len(shown):], end="", flush=True)
                shown = text
        print(text[len(shown):], flush=True)
        samples.append(text)
    print(json.dumps({"samples": samples, "temperature": args.temperature,
                      "max_new_tokens": max_new}))
    return 0


def sample_command(args):
    try:
        model, meta = checkpoint.load_model(args.ckpt, argument="--ckpt")
        tok = data.tokenizer_from_dict(meta["tokenizer"])
        if meta.get("data_mode") == "stream":
            model.eval()
            stream_prompt(tok, args.prompt)                # a bad prompt: before any output
            return sample_stream(args, model, tok)
        prompt = [tok.bos] + tok.encode(args.prompt)
        room = model.config.block_size - len(prompt)
        if args.max_new_tokens is not None:
            room = min(room, args.max_new_tokens)
        if room < 1:
            raise ValueError(f"--prompt: expected at most {model.config.block_size - 2} tokens "
                             f"(block_size {model.config.block_size} less BOS and one new "
                             f"token), got {len(prompt) - 1}")
    except ValueError as err:
        print(f"gptcore sample: {option_error(err, prompt='--prompt', text='--prompt')}",
              file=sys.stderr)
        return 2
    model.eval()
    generator = torch.Generator().manual_seed(args.seed)
    idx = torch.tensor([prompt] * args.n)
    out = model.generate(idx, room, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, stop_token=tok.bos, generator=generator)
    samples = []
    for row in out.tolist():
        body = row[1:]
        body = body[:body.index(tok.bos)] if tok.bos in body else body
        samples.append(tok.decode(body))
    known = set(recipes.training_documents(meta))
    novel = [s for s in samples if s not in known]
    for s in samples:
        print(s + ("" if s in known else "  (new)"))
    fraction = len(novel) / max(len(samples), 1)
    print(f"{len(novel)}/{len(samples)} samples are not in the training set", file=sys.stderr)
    print(json.dumps({"samples": samples, "novel_fraction": round(fraction, 3),
                      "temperature": args.temperature}))
    return 0


def add_commands(sub):
    """Registers `train`, `sample` and `eval` on the `gptcore` argument parser's subparsers."""
    p = sub.add_parser("train", help="train a preset (microgpt, names, names-moe, ...)",
                       description="Trains a preset on the names data (or --data FILE, one "
                       "document per line); the last line printed is a JSON summary.")
    p.add_argument("--preset", required=True, metavar="P",
                   help=f"one of {', '.join(sorted(recipes.RECIPES))}")
    p.add_argument("--data", metavar="FILE", help="text file (or, streamed, a directory of "
                   "them; or tinyshakespeare, shipped) (default: the preset's: the names, or "
                   "tinyshakespeare for shakespeare-char*)")
    p.add_argument("--data-mode", choices=("documents", "stream"), help="documents: one per "
                   "line, each its own sequence; stream: the text as one token stream, random "
                   "windows, the last 10%% held out (default: the preset's)")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file of model and recipe "
                   "fields (n_layer = 6, lr = 1e-3, ...); options given override it")
    p.add_argument("--tokenizer", choices=("char", "bpe"), default="char",
                   help="characters with BOS (default) or byte-level BPE")
    p.add_argument("--vocab-size", type=int_at_least(257), default=512,
                   help="BPE vocabulary size (at least 257: the 256 bytes and BOS)")
    p.add_argument("--steps", type=POSITIVE_INT,
                   help="optimizer steps (default: the preset's recipe)")
    p.add_argument("--time-budget", type=POSITIVE_FLOAT, metavar="SECONDS",
                   help="stop after this many seconds; the learning rate decays over them")
    p.add_argument("--cpu-time", action="store_true", help="count the budget and seconds in "
                   "this process's CPU time (fair on a shared machine) instead of wall time")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--threads", type=POSITIVE_INT, help="torch threads (default: the recipe's)")
    p.add_argument("--out", metavar="DIR", help="run directory: checkpoints/step-N/ (the run "
                   "resumes from the newest), loss.png, summary.json")
    p.add_argument("--checkpoint-every", type=POSITIVE_INT, metavar="N",
                   help="also checkpoint every N steps (default: by time only)")
    p.add_argument("--checkpoint-minutes", type=POSITIVE_FLOAT, default=1.0, metavar="M",
                   help="checkpoint after every M minutes of wall time (default 1); a "
                   "checkpoint is also written at the end and on SIGTERM/SIGINT")
    p.add_argument("--keep", type=POSITIVE_INT, default=2, metavar="N",
                   help="keep the newest N checkpoints (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (default auto: cuda when torch sees one)")
    p.add_argument("--dtype", choices=precision.DTYPES, default="fp32", help="bf16: autocast "
                   "(matmuls and attention in bf16, fp32 weights and residual stream)")
    p.add_argument("--compile", action="store_true", help="torch.compile the loss (forward "
                   "and backward); the first steps pay the compilation")
    p.add_argument("--expert-parallel", action="store_true", help="under torchrun: spread each "
                   "MoE layer's experts over the processes (tokens travel by all-to-all)")
    overrides.add_options(p, recipes.GPTConfig, "model (GPTConfig fields; default: the "
                          "preset's)")
    overrides.add_options(p, recipes.TrainConfig, "recipe (default: the preset's)")
    p.set_defaults(func=train_command)
    p = sub.add_parser("sample", help="sample from a checkpoint written by `gptcore train`")
    p.add_argument("--ckpt", required=True, metavar="DIR")
    p.add_argument("-n", type=POSITIVE_INT, default=20, help="number of samples")
    p.add_argument("--temperature", type=NONNEGATIVE_FLOAT, default=0.5, help="0: greedy")
    p.add_argument("--top-k", type=POSITIVE_INT, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=probability, help="sample within the smallest set of "
                   "tokens holding this much probability (nucleus sampling)")
    p.add_argument("--prompt", default="", help="text every sample starts with")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, metavar="N", help="tokens to sample "
                   "after the prompt (default: 500 for a stream checkpoint, printed as they "
                   "come; up to block_size or the end of the document otherwise)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.set_defaults(func=sample_command)
    from gptcore.training import eval_cli
    eval_cli.add_command(sub)
