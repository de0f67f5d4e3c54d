"""How each preset is trained: the data, the tokenizer, the batches and the optimiser
settings, and the table `gptcore train --preset P` dispatches through (TRAINERS).

A new kind of model registers its own trainer in TRAINERS: a callable, or a "module:function"
string imported on use, taking the parsed `gptcore train` arguments and returning the summary
dict. The GPT presets all go through train_gpt with their Recipe."""
import importlib
import time
from dataclasses import dataclass

import torch

from gptcore import parallel
from gptcore.training import checkpoint, data
from gptcore.model.config import GPTConfig
from gptcore.model import GPT
from gptcore.training.train import evaluate, train


@dataclass
class Recipe:
    steps: int                      # optimizer steps (the upper bound under a time budget)
    batch_size: int                 # documents per step
    lr: float                       # peak learning rate
    schedule: str = "cosine"        # "cosine", "linear" or "constant" decay after warm-up
    warmup: int = 0                 # linear warm-up steps
    min_lr_ratio: float = 0.0       # the decay ends at lr * min_lr_ratio
    betas: tuple = (0.9, 0.95)      # AdamW betas
    eps: float = 1e-8               # AdamW epsilon
    weight_decay: float = 0.0       # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0          # clip the global gradient norm; 0 = off
    packed: bool = True             # packed sequences (cu_seqlens) rather than padded rows
    time_budget: float | None = None  # seconds, default for the CLI (None: run all steps)
    eval_every: int = 250           # steps between validation passes
    threads: int = 1                # torch threads: toy models lose to thread overhead


RECIPES = {
    # microgpt's own recipe: one name per step, Adam (0.85, 0.99, 1e-8), lr 0.01 decaying
    # linearly to 0 over 1000 steps, no warm-up, no clipping, no weight decay.
    "microgpt": Recipe(steps=1000, batch_size=1, lr=0.01, schedule="linear",
                       betas=(0.85, 0.99), grad_clip=0.0, packed=False, eval_every=1000),
    "names": Recipe(steps=100_000, batch_size=64, lr=4e-3, warmup=100, min_lr_ratio=0.05,
                    weight_decay=0.1, time_budget=120.0),
    "names-moe": Recipe(steps=100_000, batch_size=64, lr=4e-3, warmup=100, min_lr_ratio=0.05,
                        weight_decay=0.1, time_budget=120.0),
    "gpt-oss-tiny": Recipe(steps=100_000, batch_size=64, lr=3e-3, warmup=100, min_lr_ratio=0.05,
                           weight_decay=0.1, time_budget=120.0),
}


def load_corpus(data_file=None, tokenizer="char", vocab_size=512):
    """(documents, tokenizer, description): the names, or a text file, one document per line."""
    docs = data.load_names() if data_file is None else data.load_documents(data_file)
    if tokenizer == "bpe":
        tok = data.BPETokenizer.train(docs, vocab_size)
    elif data_file is None:
        tok = data.CharTokenizer.names()
    else:
        tok = data.CharTokenizer.from_documents(docs)
    return docs, tok, {"data": data_file or "names", "tokenizer": tok.to_dict()}


def train_gpt(args):
    """`gptcore train` for the GPT presets: names (or --data) data, 10% held out, the preset's
    Recipe with the command line's overrides. Returns the summary dict."""
    recipe = RECIPES[args.preset]
    torch.set_num_threads(args.threads or recipe.threads)
    docs, tok, meta = load_corpus(args.data, args.tokenizer, args.vocab_size)
    train_docs, val_docs = data.split(docs, 0.1, seed=0)
    meta.update(split_seed=0, val_fraction=0.1, preset=args.preset, seed=args.seed)
    config = GPTConfig.preset(args.preset, vocab_size=tok.vocab_size, extra=meta)
    train_seqs = data.encode_documents(train_docs, tok, config.block_size)
    val_seqs = data.encode_documents(val_docs, tok, config.block_size)
    job = getattr(args, "parallel", None)          # a torchrun job (gptcore.parallel), or None
    device = job.device if job else None
    val_batches = [data.packed_batch(val_seqs[i:i + 512], device)
                   for i in range(0, len(val_seqs), 512)]
    torch.manual_seed(args.seed)
    model = GPT(config)
    if args.out:                    # a run directory of another model or data: refuse now
        checkpoint.check_compatible(args.out, model, meta, "--out")
    rank, world, batch_size, loss_fn = 0, 1, recipe.batch_size, None
    if job is not None:
        rank, world = job.rank, job.world_size
        batch_size = parallel.per_rank(recipe.batch_size, world)
        model = parallel.data_parallel(model.to(job.device),
                                       experts_parallel=args.expert_parallel)
        loss_fn = parallel.next_token_loss
    steps = args.steps or recipe.steps
    budget = args.time_budget if args.time_budget is not None else (
        None if args.steps else recipe.time_budget)
    clock = time.process_time if args.cpu_time else time.perf_counter
    summary = train(model, data.Batches(train_seqs, batch_size, packed=recipe.packed,
                                        seed=args.seed, rank=rank, world_size=world,
                                        device=device),
                    steps=steps, lr=recipe.lr, warmup=recipe.warmup, schedule=recipe.schedule,
                    min_lr_ratio=recipe.min_lr_ratio, betas=recipe.betas, eps=recipe.eps,
                    weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip,
                    time_budget=budget, clock=clock,
                    eval_fn=lambda m: evaluate(m, val_batches),
                    eval_every=min(recipe.eval_every, steps), out_dir=args.out, seed=args.seed,
                    meta=meta, name=args.preset, progress=not args.quiet,
                    checkpoint_every=args.checkpoint_every,
                    checkpoint_minutes=args.checkpoint_minutes, keep=args.keep, loss_fn=loss_fn,
                    is_main=rank == 0, parallel=job)
    return {"preset": args.preset, **summary, "threads": torch.get_num_threads(),
            "clock": "cpu" if args.cpu_time else "wall"}


TRAINERS = {name: train_gpt for name in RECIPES}
# masked diffusion (LLaDA): its own data, loss and summary, in gptcore/diffusion/cli.py
TRAINERS.update({"names-diffusion": "gptcore.diffusion.cli:train_command",
                 "names-diffusion-moe": "gptcore.diffusion.cli:train_command"})


def trainer(preset):
    """The function that trains `preset` (resolving "module:function" entries)."""
    entry = TRAINERS[preset]
    if isinstance(entry, str):
        module, _, function = entry.partition(":")
        entry = getattr(importlib.import_module(module), function)
    return entry
