"""nanoGPT's own train.py and `gptcore train --preset shakespeare-char` side by side on the same
text, recipe, thread count and machine, each run kept as a results file by bench/record.py.

nanoGPT is a peer run from its own checkout (not copied here): clone it anywhere and pass the
directory. Its data preparation downloads the text, so this script writes the
data/shakespeare_char/{train,val}.bin and meta.pkl it expects from gptcore's shipped copy of
the same file, with nanoGPT's format and split (characters sorted, uint16, first 90% train).

    python bench/shakespeare_vs_nanogpt.py --nanogpt /path/to/nanoGPT --threads 2
    python bench/shakespeare_vs_nanogpt.py --nanogpt /path/to/nanoGPT --compile
    python bench/shakespeare_vs_nanogpt.py --nanogpt /path/to/nanoGPT --max-iters 20  # a check

nanoGPT runs with its README's CPU flags (--device=cpu --compile=False --eval_iters=20
--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0); on a CPU it computes in fp32 whatever
its --dtype says (its autocast context is a no-op there), so --dtype bf16 changes gptcore only.
Both are timed whole (data loading, evaluation, checkpointing), wall clock, one after the other.

Besides the two runs' files it writes shakespeare-vs-nanogpt[-compile][-bf16]-<stamp>.json: per
run the whole command's wall time, the validation curve (step, seconds into the training loop,
val loss; nanoGPT's seconds are the sum of its own per-iteration times, which include its
evaluations and checkpoints, gptcore's the run's own clock) and the first evaluation at or below
TARGET_VAL_LOSS, nanoGPT's README figure for this recipe.
"""
import argparse
import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from harness import RESULTS, environment, results_path
from record import record

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "gptcore" / "datasets" / "tinyshakespeare.txt"
TARGET_VAL_LOSS = 1.88          # nanoGPT's README: "validation loss ... 1.88" on a CPU


def prepare_nanogpt_data(nanogpt):
    """Writes nanoGPT's data/shakespeare_char/{train.bin, val.bin, meta.pkl} from TEXT."""
    text = TEXT.read_text()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[ch] for ch in text], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    out = Path(nanogpt) / "data" / "shakespeare_char"
    out.mkdir(parents=True, exist_ok=True)
    ids[:cut].tofile(out / "train.bin")
    ids[cut:].tofile(out / "val.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)


def nanogpt_command(nanogpt, threads, iters, compile_, out_dir):
    return ["env", "-C", str(nanogpt), f"OMP_NUM_THREADS={threads}", sys.executable,
            "train.py", "config/train_shakespeare_char.py", "--device=cpu",
            f"--compile={compile_}", "--eval_iters=20", "--log_interval=1", "--block_size=64",
            "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
            f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--dropout=0.0",
            f"--out_dir={out_dir}"]


def gptcore_command(threads, iters, compile_, dtype, out_dir):
    command = ["env", f"OMP_NUM_THREADS={threads}", sys.executable, "-m", "gptcore", "train",
               "--preset", "shakespeare-char", "--threads", str(threads), "--dtype", dtype,
               "--device", "cpu", "--quiet", "--out", str(out_dir)]
    if iters != 2000:
        command += ["--steps", str(iters)]
    return command + (["--compile"] if compile_ else [])


def nanogpt_curve(stdout):
    """[(step, seconds, val loss)] from nanoGPT's log: its 'step N: ... val loss Y' lines, each
    timed by the sum of the 'iter I: ... time T ms' lines up to and including iteration N (the
    iteration that evaluates and checkpoints reports that time too)."""
    elapsed, curve, pending = 0.0, [], None
    for line in stdout.splitlines():
        found = re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line)
        if found:
            pending = (int(found.group(1)), float(found.group(2)))
        found = re.match(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", line)
        if found:
            elapsed += float(found.group(2)) / 1e3
            if pending is not None and int(found.group(1)) == pending[0]:
                curve.append((pending[0], round(elapsed, 2), pending[1]))
                pending = None
    if pending is not None:         # an evaluation after the last iteration line
        curve.append((pending[0], round(elapsed, 2), pending[1]))
    return curve


def gptcore_curve(run_dir):
    """[(step, seconds, val loss)] from the newest checkpoint's history (gptcore.training)."""
    from gptcore.training import checkpoint
    history = checkpoint.load_state(checkpoint.resolve(run_dir))["history"]
    return [(step, None if t is None else round(t, 2), round(loss, 4)) for step, t, loss in
            zip(history["val_steps"], history["val_seconds"], history["val_losses"])]


def reached(curve, target=TARGET_VAL_LOSS):
    """The first (step, seconds, val loss) of `curve` at or below `target`, or None."""
    return next((point for point in curve if point[2] <= target), None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, type=Path,
                        help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--compile", action="store_true", help="both compiled")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="gptcore's (nanoGPT computes fp32 on a CPU)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shakespeare-vs-nanogpt"))
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the results files go (default bench/results)")
    args = parser.parse_args(argv)
    if not (args.nanogpt / "train.py").is_file():
        parser.error(f"--nanogpt: expected a nanoGPT checkout with train.py, got "
                     f"{str(args.nanogpt)!r}")
    prepare_nanogpt_data(args.nanogpt)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    suffix = ("-compile" if args.compile else "") + ("-bf16" if args.dtype == "bf16" else "")
    runs = []
    for kind, command, run_dir in [
            (f"nanogpt-shakespeare-char{suffix}",
             nanogpt_command(args.nanogpt, args.threads, args.max_iters, args.compile,
                             args.work / "nanogpt"), None),
            (f"train-shakespeare-char{suffix}",
             gptcore_command(args.threads, args.max_iters, args.compile, args.dtype,
                             args.work / "gptcore"), args.work / "gptcore")]:
        status, path = record(kind, command, args.results)
        result = json.loads(path.read_text())
        curve = nanogpt_curve(result["stdout"]) if run_dir is None else gptcore_curve(run_dir)
        runs.append({"run": kind, "file": path.name, "returncode": status,
                     "wall_s": result["wall_s"], "curve": curve, "reached": reached(curve)})
    path = results_path(f"shakespeare-vs-nanogpt{suffix}", args.results)
    path.write_text(json.dumps({"kind": path.name.rsplit("-", 2)[0], "environment": environment(),
                                "target_val_loss": TARGET_VAL_LOSS, "threads": args.threads,
                                "runs": runs}, indent=1) + "\n")
    print("\n" + "\n".join(comparison_table(runs)))
    print(f"written {path}")
    return max(run["returncode"] for run in runs)


def comparison_table(runs, target=TARGET_VAL_LOSS):
    """Markdown: per run, its whole command's wall time, final val loss and when it first
    reached `target` (bench/readme_tables.py prints the same table)."""
    lines = [f"| run | exit | whole command s | steps | val loss at the end | first val loss "
             f"<= {target} (step, s into training) |", "|---|---:|---:|---:|---:|---|"]
    for run in runs:
        last = run["curve"][-1] if run["curve"] else (None, None, None)
        hit = run["reached"]
        when = f"step {hit[0]}, {hit[1]:.1f} s" if hit else "not reached"
        lines.append(f"| {run['run']} | {run['returncode']} | {run['wall_s']:.1f} | {last[0]} | "
                     f"{last[2]} | {when} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
