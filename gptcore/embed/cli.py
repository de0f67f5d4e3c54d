"""`gptcore embed-demo`: the Matryoshka embedding demo (demo.py) from the command line."""
import json
import sys

from gptcore.embed import demo
from gptcore.training import data
from gptcore.training.args import NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, int_at_least


def demo_command(args):
    if args.d_embed % 16:
        print(f"gptcore embed-demo: --d-embed: expected a multiple of 16 (the prefixes are "
              f"d/16 .. d), got {args.d_embed}", file=sys.stderr)
        return 2
    distinct = len(set(data.split(data.load_names(), 0.1, seed=0)[0]))
    if args.batch_size > distinct:
        print(f"gptcore embed-demo: --batch-size: expected at most {distinct} (the distinct "
              f"training names), got {args.batch_size}", file=sys.stderr)
        return 2
    print(json.dumps(demo.run(args)))
    return 0


def add_command(sub):
    """Registers `embed-demo` on the `gptcore` argument parser's subparsers."""
    p = sub.add_parser("embed-demo", help="Matryoshka embeddings vs a full-dim baseline on names",
                       description="Trains a Matryoshka (MRL) embedding model and a full-dimension "
                       "baseline on the corrupted-names task with the same budget and seed and "
                       "prints retrieval accuracy per prefix size; the last line is JSON.")
    p.add_argument("--time-budget", type=POSITIVE_FLOAT, default=90.0, metavar="SECONDS",
                   help="training time of each model (default 90)")
    p.add_argument("--steps", type=POSITIVE_INT, default=100_000,
                   help="at most this many steps per model")
    p.add_argument("--cpu-time", action="store_true", help="count the budget in this process's "
                   "CPU time (fair on a shared machine) instead of wall time")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--d-embed", type=int_at_least(16), default=256,
                   help="embedding size, a multiple of 16; prefixes d/16 .. d")
    p.add_argument("--head", choices=("linear", "mlp"), default="mlp", help="projection head")
    p.add_argument("--n-layer", type=POSITIVE_INT, default=2,
                   help="trunk layers (the names preset's width)")
    p.add_argument("--causal", action="store_true", help="causal trunk, last-token pooling")
    p.add_argument("--batch-size", type=int_at_least(2), default=128,
                   help="positive pairs per step")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-3)
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=0.02,
                   help="InfoNCE temperature (with 0.05 the MRL model ended 2.7 points "
                   "behind the baseline at full dim, with 0.02 level with it)")
    p.add_argument("--tasks", nargs="+", choices=("plain", "hard"), default=["plain", "hard"],
                   help="plain: the held-out names; hard: plus every name 1 edit from one of them")
    p.add_argument("--shortlist", type=POSITIVE_INT, default=10, help="funnel shortlist size")
    p.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="torch threads (toy models lose to "
                   "thread overhead)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=demo_command)
