"""`gptcore multimodal-demo`: the captioning demo from the command line."""
import os
import sys
import time
from pathlib import Path

import torch

from gptcore.training.args import NONNEGATIVE_INT, POSITIVE_FLOAT


def demo_command(args):
    from gptcore.multimodal import demo
    if args.json and not Path(args.json).resolve().parent.is_dir():
        print(f"gptcore multimodal-demo: --json: expected a file in an existing directory, got "
              f"{args.json!r}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    elif os.getloadavg()[0] > (os.cpu_count() or 1):
        # an oversubscribed machine: OpenMP threads wait for each other, and one thread trains
        # many times faster than two (docs/cpu-isa.md, "Measurements behind the code")
        torch.set_num_threads(1)
    clock = time.process_time if args.cpu_time else time.perf_counter
    results = demo.run(time_budget=args.time_budget, seed=args.seed, stages=args.stages,
                       progress=not args.no_progress, clock=clock)
    print(demo.format_table(results))
    for kind in ("image", "audio", "video", "video_frame_averaging"):
        shown = "; ".join(f"{truth!r} -> {said!r}" for truth, said in results[kind]["examples"])
        print(f"{kind}: {shown}", file=sys.stderr)
    line = demo.summary_json(results)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


def add_command(sub):
    p = sub.add_parser("multimodal-demo",
                       help="train a captioner on generated images, sounds and videos",
                       description="Trains encoders + projectors + a names-sized GPT on "
                       "procedurally generated captioned images, tones and videos, captions "
                       "held-out ones and prints accuracy per attribute beside chance, and the "
                       "video ablation (temporal projector vs frame averaging). Last line: JSON.")
    p.add_argument("--time-budget", type=POSITIVE_FLOAT, default=240.0, metavar="S",
                   help="training seconds, 3/4 for the captioner and 1/4 for the frame-averaging "
                   "ablation (default 240)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--stages", choices=("all", "llava"), default="all",
                   help="all: train everything from the start; llava: first the projectors "
                   "alone, then everything (LLaVA's two stages)")
    p.add_argument("--threads", type=NONNEGATIVE_INT, default=0,
                   help="torch threads (default: torch's, or 1 when the load average exceeds "
                   "the cores)")
    p.add_argument("--cpu-time", action="store_true",
                   help="count the budget in this process's CPU seconds (shared machines)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", metavar="FILE", help="also write the last line's JSON to FILE")
    p.set_defaults(func=demo_command)
