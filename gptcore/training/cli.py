"""`gptcore train`: train a preset (`gptcore sample` lives in sample_cli.py, `gptcore eval` in
eval_cli.py)."""
import json
import sys

import torch

from gptcore import parallel
from gptcore.training import checkpoint, data, overrides, precision, recipes, stop, stream
from gptcore.training.args import (NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT,
                                   int_at_least, writable_directory)


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
    from gptcore.training import eval_cli, sample_cli
    sample_cli.add_command(sub)
    eval_cli.add_command(sub)
