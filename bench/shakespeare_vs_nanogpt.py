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
"""
import argparse
import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from harness import RESULTS
from record import record

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "gptcore" / "datasets" / "tinyshakespeare.txt"


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


def nanogpt_val_loss(stdout):
    """The last 'step N: train loss X, val loss Y' line's Y (nanoGPT's evaluation)."""
    found = re.findall(r"step \d+: train loss [\d.]+, val loss ([\d.]+)", stdout)
    return float(found[-1]) if found else None


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
    rows = []
    for kind, command in [
            (f"nanogpt-shakespeare-char{suffix}",
             nanogpt_command(args.nanogpt, args.threads, args.max_iters, args.compile,
                             args.work / "nanogpt")),
            (f"train-shakespeare-char{suffix}",
             gptcore_command(args.threads, args.max_iters, args.compile, args.dtype,
                             args.work / "gptcore"))]:
        status, path = record(kind, command, args.results)
        result = json.loads(path.read_text())
        val = (result["result"] or {}).get("val_loss") if kind.startswith("train") else \
            nanogpt_val_loss(result["stdout"])
        rows.append((kind, status, result["wall_s"], val, path.name))
    print("\n| run | exit | wall s | val loss | results file |\n|---|---:|---:|---:|---|")
    for kind, status, wall, val, name in rows:
        print(f"| {kind} | {status} | {wall} | {val} | {name} |")
    return max(status for _, status, *_ in rows)


if __name__ == "__main__":
    sys.exit(main())
