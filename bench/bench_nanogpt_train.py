"""Training steps of gptcore.GPT against nanoGPT's own model.py (karpathy/nanoGPT), side by side:
the same architecture, the same batches, the same AdamW, steps interleaved (nanoGPT, gptcore,
nanoGPT, ...) so that load on a shared machine hits both alike; then a torch.profiler table of
where one step of each spends its time (self CPU time per op, and `copy_` calls per step).

nanoGPT is not vendored: its model.py is imported at run time from a checkout (a directory with
model.py) or a bare git directory (read with `git show HEAD:model.py`), given by --nanogpt or
$NANOGPT_DIR. Its CPU recipe for shakespeare_char (README) is the default shape: 4 layers, 4
heads, width 128, block 64, batch 12, GELU MLP, learned positions, tied head, no biases, no
dropout. gptcore's model has RMSNorm where nanoGPT has LayerNorm (same parameter count).

    python bench/bench_nanogpt_train.py [--shape cpu|gpu] [--steps 200] [--profile-steps 10]
        [--threads 2] [--nanogpt DIR] [--json FILE]

Prints ms/step (median and min over the interleaved steps), the ratio nanoGPT / gptcore (> 1:
gptcore is faster), both loss curves' last values, and the two profiles."""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import gptcore
from gptcore import GPT, GPTConfig

# nanoGPT's README recipes: CPU (shakespeare_char on a laptop) and the GPU config's shape
SHAPES = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64),
}
# tinyshakespeare beside the checkout (../shared/data), else the machine's shared copy
DATA = next((p for p in (Path(__file__).resolve().parents[1].parent / "shared" / "data",
                         Path("/work/shared/data")) if (p / "tinyshakespeare.txt").exists()),
            Path("/work/shared/data")) / "tinyshakespeare.txt"


def load_nanogpt(where):
    """nanoGPT's model module, imported from a checkout or a bare git directory."""
    where = Path(where)
    source = where / "model.py"
    if not source.exists():
        text = subprocess.run(["git", "--git-dir", str(where), "show", "HEAD:model.py"],
                              check=True, capture_output=True, text=True).stdout
        source = Path(tempfile.mkdtemp()) / "model.py"
        source.write_text(text)
    spec = importlib.util.spec_from_file_location("nanogpt_model", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def char_data(path):
    """The text as int64 character ids (nanoGPT's prepare.py: sorted set of characters)."""
    text = Path(path).read_text()
    chars = sorted(set(text))
    ids = {c: i for i, c in enumerate(chars)}
    return torch.tensor([ids[c] for c in text], dtype=torch.int64), len(chars)


def batches(data, block, batch, count, seed=0):
    """`count` (x, y) pairs of random windows, as nanoGPT's get_batch draws them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        starts = torch.randint(len(data) - block, (batch,), generator=g)
        x = torch.stack([data[i:i + block] for i in starts])
        y = torch.stack([data[i + 1:i + 1 + block] for i in starts])
        out.append((x, y))
    return out


def models(nanogpt, shape, vocab, seed=0):
    torch.manual_seed(seed)
    theirs = nanogpt.GPT(nanogpt.GPTConfig(block_size=shape["block_size"], vocab_size=vocab,
                                           n_layer=shape["n_layer"], n_head=shape["n_head"],
                                           n_embd=shape["n_embd"], dropout=0.0, bias=False))
    torch.manual_seed(seed)
    ours = GPT(GPTConfig(vocab_size=vocab, block_size=shape["block_size"],
                         n_layer=shape["n_layer"], d_model=shape["n_embd"],
                         n_head=shape["n_head"], mlp="gelu", pos="learned",
                         tie_embeddings=True, final_norm=True))
    return theirs, ours


def adamw(model, fused):
    """nanoGPT's optimizer for both models (train.py + config/train_shakespeare_char.py):
    weight decay 0.1 on matrices and tables only, lr 1e-3, betas (0.9, 0.99)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fused=fused)


def stepper(model, opt):
    def step(x, y):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)
    return step


def timed_steps(steps, data):
    """Runs each (name -> step) on every batch, interleaved; -> name -> (seconds, losses)."""
    times = {name: [] for name in steps}
    losses = {name: [] for name in steps}
    for x, y in data:
        for name, step in steps.items():
            start = time.perf_counter()
            losses[name].append(step(x, y))
            times[name].append(time.perf_counter() - start)
    return times, losses


def profile(step, data):
    """Self CPU time per op over the steps, and how many `copy_` calls one step makes."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for x, y in data:
            step(x, y)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(((e.key, e.self_cpu_time_total, e.count) for e in events),
                  key=lambda r: -r[1])
    per_step = len(data)
    copies = sum(e.count for e in events if e.key == "aten::copy_") / per_step
    return {"total_ms_per_step": total / 1e3 / per_step, "copy_calls_per_step": copies,
            "ops": [{"op": k, "self_ms_per_step": t / 1e3 / per_step,
                     "share": t / total if total else 0.0, "calls_per_step": c / per_step}
                    for k, t, c in rows]}


def print_profile(name, prof, top):
    print(f"\n{name}: {prof['total_ms_per_step']:.2f} ms self CPU per step, "
          f"{prof['copy_calls_per_step']:.0f} copy_ calls per step")
    print(f"  {'op':44s} {'ms/step':>8s} {'share':>6s} {'calls':>6s}")
    for row in prof["ops"][:top]:
        print(f"  {row['op'][:44]:44s} {row['self_ms_per_step']:8.3f} {row['share']:6.1%} "
              f"{row['calls_per_step']:6.0f}")


def run(quick=False):
    """`gptcore bench`'s row: median step time of gptcore.GPT against nanoGPT's model.py (none
    when no nanoGPT checkout is at $NANOGPT_DIR or the default path)."""
    from harness import Row
    where = os.environ.get("NANOGPT_DIR")
    if not where or not Path(where).exists():
        print(f"bench_nanogpt_train: NANOGPT_DIR={where!r} is not a nanoGPT checkout (or bare git "
              f"directory); row left out", file=sys.stderr)
        return []
    data, vocab = char_data(DATA)
    shape = SHAPES["cpu"]
    theirs, ours = models(load_nanogpt(where), shape, vocab)
    steps = {"nanogpt": stepper(theirs, adamw(theirs, True)),
             "gptcore": stepper(ours, adamw(ours, True))}
    count = 10 if quick else 100
    all_batches = batches(data, shape["block_size"], shape["batch_size"], 5 + count)
    timed_steps(steps, all_batches[:5])
    times, _ = timed_steps(steps, all_batches[5:])
    return [Row("nanogpt_train", "4x4x128 block 64 batch 12 fp32 step",
                statistics.median(times["gptcore"]), statistics.median(times["nanogpt"]),
                "nanoGPT model.py")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fused-adamw", dest="fused", action="store_false")
    parser.add_argument("--nanogpt", default=os.environ.get("NANOGPT_DIR"), required=
                        "NANOGPT_DIR" not in os.environ,
                        help="a nanoGPT checkout or bare git directory (default $NANOGPT_DIR)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nanogpt = load_nanogpt(args.nanogpt)
    data, vocab = char_data(args.data)
    shape = SHAPES[args.shape]
    theirs, ours = models(nanogpt, shape, vocab)
    n_theirs, n_ours = (sum(p.numel() for p in m.parameters()) for m in (theirs, ours))
    steps = {"nanogpt": stepper(theirs, adamw(theirs, args.fused)),
             "gptcore": stepper(ours, adamw(ours, args.fused))}
    all_batches = batches(data, shape["block_size"], shape["batch_size"],
                          args.warmup + args.steps + args.profile_steps)
    timed_steps(steps, all_batches[:args.warmup])
    times, losses = timed_steps(steps, all_batches[args.warmup:args.warmup + args.steps])
    profiles = {name: profile(step, all_batches[args.warmup + args.steps:])
                for name, step in steps.items()}

    summary = {name: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t),
                      "last_loss": statistics.mean(losses[name][-10:])}
               for name, t in times.items()}
    ratio = summary["nanogpt"]["median_ms"] / summary["gptcore"]["median_ms"]
    print(f"shape {args.shape} {shape}, vocab {vocab}, {args.threads} threads, "
          f"{args.steps} interleaved steps, AdamW fused={args.fused}, "
          f"params nanoGPT {n_theirs:,} gptcore {n_ours:,}, cpu isa {gptcore._C.isa()}")
    for name, s in summary.items():
        print(f"  {name:8s} {s['median_ms']:8.2f} ms/step median {s['min_ms']:8.2f} min   "
              f"loss (mean of last 10) {s['last_loss']:.4f}")
    print(f"  ratio nanoGPT / gptcore (median): {ratio:.3f}x")
    for name, prof in profiles.items():
        print_profile(name, prof, args.top)
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, **shape, "vocab": vocab,
                                               "threads": args.threads, "steps": args.steps,
                                               "summary": summary, "ratio": ratio,
                                               "profiles": profiles}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
