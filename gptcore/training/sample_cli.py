"""`gptcore sample --ckpt DIR`: samples from a checkpoint through the sampler of the objective
it was trained with (its plug-in in gptcore.training.recipes.OBJECTIVES): the autoregressive
one is here, masked diffusion's in gptcore.diffusion.cli."""
import json
import sys

import torch

from gptcore.training import checkpoint, data, recipes
from gptcore.training.args import (NONNEGATIVE_FLOAT, NONNEGATIVE_INT, POSITIVE_INT,
                                   option_error, probability)

AR_TEMPERATURE = 0.5                # microgpt's


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


def sample_next_token(args):
    """The autoregressive sampler (NextTokenPreset's): documents one by one, each marked when
    it is not in the training set, or a stream checkpoint's text as it comes."""
    if args.temperature is None:
        args.temperature = AR_TEMPERATURE
    for option, value in (("--steps", args.steps), ("--block-length", args.block_length),
                          ("--remasking", args.remasking)):
        if value is not None:
            print(f"gptcore sample: {option}: expected no value for an autoregressive "
                  f"checkpoint (it applies to diffusion ones), got {value}", file=sys.stderr)
            return 2
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


def sample_command(args):
    """Dispatches to the sampler of the checkpoint's objective."""
    try:
        name = recipes.checkpoint_objective(args.ckpt, argument="--ckpt")
    except ValueError as err:
        print(f"gptcore sample: {err}", file=sys.stderr)
        return 2
    return recipes.load_entry(recipes.plugin(name).sampler)(args)


def add_command(sub):
    p = sub.add_parser("sample", help="sample from a checkpoint written by `gptcore train`")
    p.add_argument("--ckpt", required=True, metavar="DIR")
    p.add_argument("-n", type=POSITIVE_INT, default=20, help="number of samples")
    p.add_argument("--temperature", type=NONNEGATIVE_FLOAT, help="0: greedy (default: "
                   f"{AR_TEMPERATURE} for autoregressive checkpoints, the sampler's for "
                   "diffusion ones)")
    p.add_argument("--top-k", type=POSITIVE_INT, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=probability, help="sample within the smallest set of "
                   "tokens holding this much probability (nucleus sampling)")
    p.add_argument("--prompt", default="", help="text every sample starts with")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, metavar="N", help="tokens to sample "
                   "after the prompt (default: 500 for a stream checkpoint, printed as they "
                   "come; up to block_size or the end of the document otherwise)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    d = p.add_argument_group("masked diffusion checkpoints")
    d.add_argument("--steps", type=POSITIVE_INT,
                   help="denoising steps (default: one per generated token)")
    d.add_argument("--block-length", type=POSITIVE_INT, help="tokens per semi-autoregressive "
                   "block (default: the whole generated length)")
    d.add_argument("--remasking", choices=("low_confidence", "random"),
                   help="which predictions to commit (default: low_confidence)")
    p.set_defaults(func=sample_command)
