"""`gptcore embed-demo` (the Matryoshka demo, demo.py) and `gptcore multimodal-embed-demo`
(one space for text, images, audio and video, multimodal_demo.py) from the command line."""
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


def multimodal_command(args):
    from gptcore.embed import multimodal_demo
    if args.d_embed % 32:
        print(f"gptcore multimodal-embed-demo: --d-embed: expected a multiple of 32 (the prefixes "
              f"are d/32 .. d), got {args.d_embed}", file=sys.stderr)
        return 2
    if args.queries > args.n_eval // 2:
        print(f"gptcore multimodal-embed-demo: --queries: expected at most --n-eval / 2 = "
              f"{args.n_eval // 2}, got {args.queries}", file=sys.stderr)
        return 2
    print(json.dumps(multimodal_demo.run(args)))
    return 0


def add_multimodal_command(sub):
    p = sub.add_parser(
        "multimodal-embed-demo", help="one embedding space for text, images, audio and video",
        description="Trains a unified multimodal Matryoshka embedder, the same on the full "
        "dimension only, late-fusion towers and the text-intermediate pipeline (captioner + "
        "text embedder) with the same time each on procedural data, then prints recall@1/@10 "
        "per direction and prefix, and for attributes no caption names; the last line is JSON.")
    p.add_argument("--time-budget", type=POSITIVE_FLOAT, default=120.0, metavar="SECONDS",
                   help="training time of each system (default 120: with --jobs 2 the demo "
                   "fits 5 minutes of a quiet 2-core CPU)")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--d-embed", type=int_at_least(32), default=128,
                   help="embedding size, a multiple of 32; prefixes d/32 .. d")
    p.add_argument("--per-pair", type=POSITIVE_INT, default=16,
                   help="pairs of each of the 8 kinds per step (video-video twice as many, "
                   "text-audio and audio-audio half; half of each kind built around neighbours "
                   "of the other half: multimodal_task.PairBatches)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-3,
                   help="encoders' and heads' learning rate (the trunk's: 0.3x)")
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=0.05, help="InfoNCE temperature")
    p.add_argument("--n-train", type=int_at_least(48), default=1500,
                   help="training examples of each kind")
    p.add_argument("--n-eval", type=int_at_least(24), default=400,
                   help="held-out examples of each kind (half queries, half candidates)")
    p.add_argument("--queries", type=POSITIVE_INT, default=100, help="queries per direction")
    p.add_argument("--jobs", type=POSITIVE_INT, default=2,
                   help="systems trained at once, each in a process of its own (default 2: one "
                   "per core of a 2-core CPU)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="torch threads per process (one step of the unified model, 2 threads "
                   "against 1: 1.3x less wall time for 1.5x more CPU time)")
    p.add_argument("--cpu-time", action="store_true", help="count each budget in the training "
                   "process's CPU time (fair on a shared machine) instead of wall time")
    p.add_argument("--plot", default="multimodal-embed-retrieval.png", metavar="PNG",
                   help="where the recall-vs-dimension plot goes ('' for none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=multimodal_command)


def add_command(sub):
    """Registers `embed-demo` and `multimodal-embed-demo` on the `gptcore` argument parser's
    subparsers."""
    add_multimodal_command(sub)
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
