"""How each preset is trained: one trainer (train_preset) for every preset, whatever its
objective. A preset is a model config (GPTConfig.preset) and a TrainConfig (RECIPES); its
objective (GPTConfig.extra["objective"], default "next_token") names a plug-in in OBJECTIVES
that says how documents become training sequences and batches, what the loss and the
validation are, and what the run's summary adds. Left-to-right language modelling
(NextTokenPreset) is here; masked diffusion registers its own (gptcore.diffusion.train).
Next-token presets read their text in one of two data modes: "documents" (one per line, each
its own sequence) or "stream" (the text as one token stream, gptcore.training.stream)."""
import dataclasses
import importlib
import time

import torch

from gptcore import parallel
from gptcore.model import GPT
from gptcore.model.config import GPTConfig
from gptcore.training import checkpoint, data, overrides, precision, stream
from gptcore.training.config import TrainConfig
from gptcore.training.objective import NextToken
from gptcore.training.train import train

VAL_FRACTION, SPLIT_SEED = 0.1, 0        # the held-out documents of every preset


class NextTokenPreset:
    """The objective plug-in of the autoregressive presets: [BOS] + document + [BOS] sequences
    (packed or padded), the next-token loss, its token-weighted validation mean."""
    name = "next_token"
    supports_parallel = True
    sampler = "gptcore.training.sample_cli:sample_next_token"

    @staticmethod
    def model_config(preset, tokenizer, meta):
        return GPTConfig.preset(preset, vocab_size=tokenizer.vocab_size, extra=meta)

    @staticmethod
    def encode(docs, tokenizer, block_size):
        return data.encode_documents(docs, tokenizer, block_size)

    @staticmethod
    def batches(seqs, recipe, *, batch_size, seed, rank, world_size, device):
        return data.Batches(seqs, batch_size, packed=recipe.packed, seed=seed, rank=rank,
                            world_size=world_size, device=device)

    @staticmethod
    def objective(val_seqs, tokenizer, device):
        return NextToken([data.packed_batch(val_seqs[i:i + 512], device)
                          for i in range(0, len(val_seqs), 512)])


RECIPES = {
    # microgpt's own recipe: one name per step, Adam (0.85, 0.99, 1e-8), lr 0.01 decaying
    # linearly to 0 over 1000 steps, no warm-up, no clipping, no weight decay.
    "microgpt": TrainConfig(steps=1000, batch_size=1, lr=0.01, schedule="linear",
                            betas=(0.85, 0.99), grad_clip=0.0, packed=False, eval_every=1000),
    "names": TrainConfig(steps=100_000, batch_size=64, lr=4e-3, warmup=100, min_lr_ratio=0.05,
                         weight_decay=0.1, time_budget=120.0),
    "names-moe": TrainConfig(steps=100_000, batch_size=64, lr=4e-3, warmup=100,
                             min_lr_ratio=0.05, weight_decay=0.1, time_budget=120.0),
    "gpt-oss-tiny": TrainConfig(steps=100_000, batch_size=64, lr=3e-3, warmup=100,
                                min_lr_ratio=0.05, weight_decay=0.1, time_budget=120.0),
    # The names recipe with half the rows: a diffusion row is the whole 16-token canvas (name +
    # end padding) where a packed AR row is [BOS] + name + [BOS] (7.8 tokens on average), so
    # 32 rows carry about the tokens of the AR recipe's 64 and a step costs about the same.
    "names-diffusion": TrainConfig(steps=100_000, batch_size=32, lr=4e-3, warmup=100,
                                   min_lr_ratio=0.05, weight_decay=0.1, time_budget=120.0),
    "names-diffusion-moe": TrainConfig(steps=100_000, batch_size=32, lr=4e-3, warmup=100,
                                       min_lr_ratio=0.05, weight_decay=0.1, time_budget=120.0),
    # nanoGPT's shakespeare_char recipe as its README runs it on a CPU: 2000 iterations of 12
    # windows of 64 characters, AdamW lr 1e-3 betas (0.9, 0.99) wd 0.1, 100 warm-up steps,
    # cosine to 1e-4, clip 1.0, torch's default thread count (nanoGPT leaves it)
    "shakespeare-char": TrainConfig(steps=2000, batch_size=12, lr=1e-3, warmup=100,
                                    min_lr_ratio=0.1, betas=(0.9, 0.99), weight_decay=0.1,
                                    eval_every=250, threads=torch.get_num_threads()),
    # nanoGPT's GPU recipe for it (config/train_shakespeare_char.py): 64 windows of 256, 5000
    "shakespeare-char-gpu": TrainConfig(steps=5000, batch_size=64, lr=1e-3, warmup=100,
                                        min_lr_ratio=0.1, betas=(0.9, 0.99), weight_decay=0.1,
                                        eval_every=250, threads=torch.get_num_threads()),
}
# the data a preset trains on when --data is not given, and how it reads it
DEFAULT_DATA = {"shakespeare-char": ("tinyshakespeare", "stream"),
                "shakespeare-char-gpu": ("tinyshakespeare", "stream")}
# validation batches per evaluation during stream training (nanoGPT's README CPU run: 20)
STREAM_EVAL_BATCHES = 20
# objective name -> plug-in, or "module:attribute" imported on first use
OBJECTIVES = {"next_token": NextTokenPreset,
              "diffusion": "gptcore.diffusion.train:DiffusionPreset"}


def load_entry(entry):
    """An OBJECTIVES value or a plug-in's sampler: the object itself, or "module:attribute"
    imported on first use (so that an application is imported only when it is used)."""
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
    return entry


def plugin(name):
    """The objective plug-in called `name` (a key of OBJECTIVES)."""
    return load_entry(OBJECTIVES[name])


def objective_of(preset):
    """The objective plug-in that trains `preset`."""
    return plugin(GPTConfig.preset(preset).extra.get("objective", NextTokenPreset.name))


def checkpoint_objective(directory, argument="ckpt"):
    """The name of the objective the checkpoint in `directory` (a run or one checkpoint) was
    trained with; ValueError naming `argument` for a directory that holds none."""
    config = checkpoint.read_config(checkpoint.resolve(directory, argument)).get("config") or {}
    name = (config.get("extra") or {}).get("objective", NextTokenPreset.name)
    if name not in OBJECTIVES:
        raise ValueError(f"{argument}: expected a checkpoint trained with one of "
                         f"{sorted(OBJECTIVES)}, got objective {name!r} in {directory!r}")
    return name


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


def data_source(args):
    """(data, mode): --data and --data-mode, else the preset's defaults (the names as
    documents for the names presets)."""
    default, mode = DEFAULT_DATA.get(args.preset, (None, "documents"))
    data_file = getattr(args, "data", None) or default
    return data_file, getattr(args, "data_mode", None) or mode


def stream_run(args, recipe, model_overrides, world, rank, device, cache):
    """(config, batches, objective, meta) of the stream mode: the text as one token stream
    (cached in the run directory `cache` when there is one), the last 10% held out."""
    data_file, _ = data_source(args)
    tokens, tok, _ = stream.load(data_file, args.tokenizer, args.vocab_size, cache_root=cache)
    meta = {"data": str(data_file), "data_mode": "stream", "tokenizer": tok.to_dict(),
            "val_fraction": stream.VAL_FRACTION, "preset": args.preset, "seed": args.seed}
    config = GPTConfig.preset(args.preset, **{**model_overrides, "vocab_size": tok.vocab_size,
                                              "extra": meta})
    train_tokens, val_tokens = stream.split(tokens)
    batches = stream.StreamBatches(train_tokens, config.block_size,
                                   parallel.per_rank(recipe.batch_size, world), seed=args.seed,
                                   rank=rank, world_size=world, device=device)
    objective = NextToken(stream.eval_batches(val_tokens, config.block_size, recipe.batch_size,
                                              limit=STREAM_EVAL_BATCHES, device=device))
    return config, batches, objective, meta


def training_documents(meta):
    """The documents a checkpoint was trained on (its split re-derived from its metadata)."""
    docs = data.load_names() if meta.get("data", "names") == "names" else \
        data.load_documents(meta["data"])
    return data.split(docs, meta.get("val_fraction", VAL_FRACTION),
                      seed=meta.get("split_seed", SPLIT_SEED))[0]


def train_preset(args):
    """`gptcore train --preset P`: the names (or --data) documents, 10% held out, the preset's
    TrainConfig with the command line's overrides, trained under its objective plug-in (in a
    torchrun job when args.parallel is a gptcore.parallel.Context). Returns the summary."""
    plugin = objective_of(args.preset)
    job = getattr(args, "parallel", None)
    if job is not None and not plugin.supports_parallel:
        raise ValueError(f"--preset: {args.preset} trains in one process only (no torchrun)")
    given = dict(steps=args.steps, seed=args.seed, threads=args.threads, keep=args.keep,
                 checkpoint_every=args.checkpoint_every,
                 checkpoint_minutes=args.checkpoint_minutes)
    given_recipe = {name: value for name, value in given.items() if value is not None}
    if args.steps or args.time_budget is not None:     # --steps alone: all of them, no budget
        given_recipe["time_budget"] = args.time_budget
    model_overrides, recipe_overrides = overrides.split_overrides(
        args, TrainConfig, getattr(args, "config", None))
    recipe = dataclasses.replace(RECIPES[args.preset], **{**recipe_overrides, **given_recipe})
    torch.set_num_threads(recipe.threads)
    device = job.device if job else precision.resolve_device(getattr(args, "device", None))
    rank, world = (job.rank, job.world_size) if job else (0, 1)
    if data_source(args)[1] == "stream":
        # under torchrun every rank tokenises in memory: no two writers of one cache
        config, batches, objective, meta = stream_run(
            args, recipe, model_overrides, world, rank, device,
            cache=args.out if job is None else None)
        return _run(args, job, recipe, config, batches, objective, meta)
    docs, tok, meta = load_corpus(args.data, args.tokenizer, args.vocab_size)
    train_docs, val_docs = data.split(docs, VAL_FRACTION, seed=SPLIT_SEED)
    meta.update(split_seed=SPLIT_SEED, val_fraction=VAL_FRACTION, preset=args.preset,
                seed=args.seed)
    config = dataclasses.replace(plugin.model_config(args.preset, tok, meta), **model_overrides)
    train_seqs = plugin.encode(train_docs, tok, config.block_size)
    val_seqs = plugin.encode(val_docs, tok, config.block_size)
    batches = plugin.batches(train_seqs, recipe, batch_size=parallel.per_rank(recipe.batch_size,
                                                                              world),
                             seed=args.seed, rank=rank, world_size=world, device=device)
    return _run(args, job, recipe, config, batches, plugin.objective(val_seqs, tok, device),
                meta)


def _run(args, job, recipe, config, batches, objective, meta):
    """Builds the model of `config` and trains it; the summary."""
    torch.manual_seed(args.seed)
    device = job.device if job else precision.resolve_device(getattr(args, "device", None))
    model = GPT(config).to(device)
    dtype, compile_ = getattr(args, "dtype", None) or "fp32", getattr(args, "compile", False)
    if dtype != "fp32" or compile_:
        objective.loss_fn = precision.wrap(objective.loss_fn, device, dtype, compile_)
    if args.out:                    # a run directory of another model or data: refuse now
        checkpoint.check_compatible(args.out, model, meta, "--out")
    if job is not None:
        model = parallel.data_parallel(model.to(job.device),
                                       experts_parallel=args.expert_parallel)
    summary = train(model, batches, recipe, objective=objective,
                    context=job, out_dir=args.out, meta=meta, name=args.preset,
                    progress=not args.quiet,
                    clock=time.process_time if args.cpu_time else time.perf_counter)
    return {"preset": args.preset, **summary, "threads": torch.get_num_threads(),
            "clock": "cpu" if args.cpu_time else "wall", "device": str(device), "dtype": dtype,
            "compile": bool(compile_)}
