"""The command line of the masked-diffusion GPT (`gptcore train --preset names-diffusion[-moe]`
trains through gptcore.training.recipes with diffusion_train.DiffusionPreset): its sampler,
which `gptcore sample --ckpt DIR` calls for a diffusion checkpoint (DiffusionPreset.sampler), and
`gptcore compare --ar CKPT --diffusion CKPT`."""
import json
import sys
import time
from pathlib import Path

import torch

from gptcore.diffusion import train as diffusion_train
from gptcore.training import checkpoint, data, recipes
from gptcore.training.args import NONNEGATIVE_FLOAT, NONNEGATIVE_INT, POSITIVE_INT, option_error
from gptcore.training.objective import evaluate
from gptcore.training.sample_cli import AR_TEMPERATURE


def _valid(name):
    """The issue's validity rule for a names sample: a-z only, 2 to 15 characters."""
    return 2 <= len(name) <= 15 and name.isascii() and name.isalpha() and name.islower()


def sample_diffusion(args):
    """`gptcore sample` on a diffusion checkpoint: the remasking sampler, each sample marked
    when it is not in the training set."""
    args.remasking = args.remasking or "low_confidence"
    if args.temperature is None:
        args.temperature = diffusion_train.DEFAULT_TEMPERATURE
    for option, value in (("--top-k", args.top_k), ("--top-p", args.top_p),
                          ("--max-new-tokens", args.max_new_tokens)):
        if value is not None:
            print(f"gptcore sample: {option}: expected no value for a diffusion checkpoint (it "
                  f"applies to autoregressive ones), got {value}", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(args.seed)
    try:
        model, meta = checkpoint.load_model(args.ckpt, argument="--ckpt")
        tok = data.tokenizer_from_dict(meta["tokenizer"])
        samples = diffusion_train.sample(model, tok, args.n, steps=args.steps,
                                         block_length=args.block_length,
                                         temperature=args.temperature, remasking=args.remasking,
                                         prompt=args.prompt, generator=generator)
    except ValueError as err:
        message = option_error(err, prompt="--prompt", text="--prompt", steps="--steps",
                               block_length="--block-length",
                               **{"gen_length/block_length": "--block-length"})
        print(f"gptcore sample: {message}", file=sys.stderr)
        return 2
    known = set(recipes.training_documents(meta))
    for s in samples:
        print(s + ("" if s in known else "  (new)"))
    novel = sum(s not in known for s in samples)
    print(f"{novel}/{len(samples)} samples are not in the training set", file=sys.stderr)
    print(json.dumps({"samples": samples, "novel_fraction": round(novel / max(len(samples), 1), 3),
                      "temperature": args.temperature, "steps": args.steps,
                      "block_length": args.block_length, "remasking": args.remasking}))
    return 0


def _ar_samples(model, tok, n, temperature, generator):
    bos = torch.full((n, 1), tok.bos, dtype=torch.int64)
    out = model.generate(bos, model.config.block_size - 1, temperature=temperature,
                         stop_token=tok.bos, generator=generator)
    return [diffusion_train.decode(tok, row[1:]) for row in out]


def _report(kind, directory, n, temperature, seed, steps):
    """One row of the comparison: validation NLL (exact or bound) on the checkpoint's own split,
    n timed samples and their valid-and-novel fraction."""
    model, meta = checkpoint.load_model(directory)
    model.eval()
    tok = data.tokenizer_from_dict(meta["tokenizer"])
    docs = recipes.training_documents(meta)
    all_docs = data.load_names() if meta.get("data", "names") == "names" else \
        data.load_documents(meta["data"])
    val_docs = data.split(all_docs, meta.get("val_fraction", recipes.VAL_FRACTION),
                          seed=meta.get("split_seed", recipes.SPLIT_SEED))[1]
    generator = torch.Generator().manual_seed(seed)
    if kind == "diffusion":
        seqs = diffusion_train.encode_padded(val_docs, tok, model.config.block_size)
        nll, stderr = diffusion_train.validation_bound(model, seqs, tok.bos,
                                                       num_samples=diffusion_train.BOUND_SAMPLES)
        samples_start = time.perf_counter()
        samples = diffusion_train.sample(model, tok, n, steps=steps, temperature=temperature,
                                         generator=generator)
    else:
        seqs = data.encode_documents(val_docs, tok, model.config.block_size)
        batches = [data.packed_batch(seqs[i:i + 512]) for i in range(0, len(seqs), 512)]
        nll, stderr = evaluate(model, batches), None
        samples_start = time.perf_counter()
        samples = _ar_samples(model, tok, n, temperature, generator)
    sampling = time.perf_counter() - samples_start
    summary_path = Path(directory) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    known = set(docs)
    good = [s for s in samples if _valid(s) and s not in known]
    return {"model": f"{meta.get('preset', kind)} ({kind})", "params": model.num_params(),
            "active_params": model.num_params(active=True), "train_seconds": summary.get("seconds"),
            "train_steps": summary.get("steps"), "val_nll": round(nll, 4),
            "val_nll_stderr": None if stderr is None else round(stderr, 4),
            "nll_kind": "bound" if kind == "diffusion" else "exact",
            "samples_per_s": round(n / sampling, 1), "valid_novel": round(len(good) / n, 3),
            "samples": samples[:10]}


def compare_command(args):
    """`gptcore compare`: the AR and diffusion checkpoints side by side, then 10 samples each."""
    for kind, directory in (("ar", args.ar), ("diffusion", args.diffusion)):
        try:
            objective = recipes.checkpoint_objective(directory, f"--{kind}")
        except ValueError as err:
            print(f"gptcore compare: {err}", file=sys.stderr)
            return 2
        if (objective == diffusion_train.OBJECTIVE) != (kind == "diffusion"):
            print(f"gptcore compare: --{kind}: {directory!r} is "
                  f"{'not ' if kind == 'diffusion' else ''}a diffusion checkpoint", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    rows = [_report("ar", args.ar, args.n, args.temperature, args.seed, None),
            _report("diffusion", args.diffusion, args.n, args.diffusion_temperature, args.seed,
                    args.steps)]
    print(f"{args.n} samples each; AR temperature {args.temperature}, diffusion temperature "
          f"{args.diffusion_temperature}, steps {args.steps or 'one per token'}, "
          f"blocks of {diffusion_train.DEFAULT_BLOCK_LENGTH}; val NLL on the held-out 10%")
    head = (f"{'model':<34} {'params':>9} {'train s':>8} {'val NLL nats/char':>22} "
            f"{'samples/s':>10} {'valid+novel':>12}")
    print(head)
    print("-" * len(head))
    for r in rows:
        nll = f"{r['val_nll']:.4f} exact" if r["nll_kind"] == "exact" else \
            f"<= {r['val_nll']:.4f} +- {r['val_nll_stderr']:.4f}"
        seconds = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        print(f"{r['model']:<34} {r['params']:>9,} {seconds:>8} {nll:>22} "
              f"{r['samples_per_s']:>10.1f} {r['valid_novel']:>12.1%}")
    for r in rows:
        print(f"\n{r['model']} samples: " + ", ".join(r["samples"]))
    print(json.dumps({"n": args.n, "temperature": args.temperature,
                      "diffusion_temperature": args.diffusion_temperature, "rows": rows}))
    return 0


def add_command(sub):
    """Registers `compare` (the sampler is reached through `gptcore sample`)."""
    p = sub.add_parser("compare", help="an autoregressive and a diffusion checkpoint side by side")
    p.add_argument("--ar", required=True, metavar="CKPT", help="checkpoint of an AR preset")
    p.add_argument("--diffusion", required=True, metavar="CKPT",
                   help="checkpoint of a diffusion preset")
    p.add_argument("-n", type=POSITIVE_INT, default=200, help="samples per model (timed)")
    p.add_argument("--temperature", type=NONNEGATIVE_FLOAT, default=AR_TEMPERATURE,
                   help="AR sampling")
    p.add_argument("--diffusion-temperature", type=NONNEGATIVE_FLOAT,
                   default=diffusion_train.DEFAULT_TEMPERATURE, help="diffusion sampling")
    p.add_argument("--steps", type=POSITIVE_INT,
                   help="diffusion denoising steps (default: one per token)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.set_defaults(func=compare_command)
