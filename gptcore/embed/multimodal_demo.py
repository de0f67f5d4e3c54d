"""`gptcore multimodal-embed-demo` (command line in cli.py): one embedding space for text, images,
audio and video, against the text-intermediate pipeline and late fusion, with the same training
time each, on held-out procedural data. run() returns the JSON summary.

Systems: "unified" (MultimodalEmbedder, early fusion, Matryoshka loss); "full-dim" (the same
trained on the full dimension only: the Matryoshka baseline); "late fusion" (separate towers);
"text pipeline" (the captioner writes a caption for every input, a text-only embedder trained
on true captions embeds it: 4/5 of the time to the captioner, 1/5 to the embedder)."""
import multiprocessing
import time

import torch

from gptcore.embed.multimodal import MultimodalEmbedder
from gptcore.embed.multimodal_task import PAIRS, Pools, PairBatches, chance, directions, recall
from gptcore.multimodal import demo as captioner_demo
from gptcore.multimodal.captioner import CaptionerConfig, Vocab
from gptcore.multimodal.captioner import caption_item as captioner_prompt
from gptcore.training.config import TrainConfig
from gptcore.training.objective import Objective
from gptcore.training.train import train



def raw(item):
    """An Item as the embedder reads it: strings and raw tensors."""
    return tuple(p if isinstance(p, str) else p.data for p in item.parts)


def as_text(captions):
    """item -> one string, every input replaced by captions[id(example)] (the pipeline's view)."""
    return lambda item: (" ".join(p if isinstance(p, str) else captions(p) for p in item.parts),)


def pair_loss(view, dims=None):
    def loss_fn(model, batch):
        a = model(model.collate([view(i) for i in batch["a"]]))           # (N, d_embed)
        b = model(model.collate([view(i) for i in batch["b"]]))
        return model.loss(a, b, dims, same=batch["same"])
    return loss_fn


# The encoders of every system, the captioner's included: images pooled to 2x2 tokens, video
# frames stacked as channels through one ViT. One training step (64 pairs, one thread, Zen 5)
# took 0.26 s of CPU with the captioner's encoders (36 image tokens, a ViT per frame) and
# 0.09 s with these (docs/embeddings.md). The projectors have weights per pooled cell: with one
# map for all four cells, the embedder's mean pooling lost an image's quadrant (a linear probe
# of the embedding: 25%, chance) and half of a video's direction (50%); with a map per cell,
# 100% and 100%. A video's tokens also hold its middle frame through the image encoder, which
# learns shapes from every image: the stacked frames alone told a clip's shape to a probe 50%
# of the time; with the still, text->video recall@1 went 61 -> 89% (the unified model alone,
# 120 s of CPU, one seed).
INPUTS = CaptionerConfig(stem=32, temporal="stack", image_pool=2, cell_projector=True,
                         video_still=True)

# Pairs of each kind per step, as multiples of --per-pair. Only video-video pairs teach a
# motion's speed: with twice as many the unified model's speed recall@1 went 52 -> 87%; sound is
# learned from few, so text-audio and audio-audio get half (docs/embeddings.md).
PAIR_SHARES = {"text-audio": 0.5, "audio-audio": 0.5, "video-video": 2.0}


def pairs_per_kind(per_pair):
    return {kind: max(1, round(per_pair * PAIR_SHARES.get(kind, 1.0))) for kind in PAIRS}


# the trunk learns at 0.3x the encoders' rate, as the captioner's text model (multimodal/demo.py):
# text->image pairs alone, 30 s, lr 3e-3: recall@1 63% at 1x, 97% at 0.3x (docs/embeddings.md)
LR_SCALES = {"trunk.": 0.3}


def fit(model, pools, view, seconds, args, name, dims=None):
    recipe = TrainConfig(steps=10**9, lr=args.lr, warmup=20, time_budget=seconds,
                         seed=args.seed, weight_decay=0.01, lr_scales=LR_SCALES)
    return train(model, PairBatches(pools, pairs_per_kind(args.per_pair), args.seed), recipe,
                 objective=Objective(pair_loss(view, dims)), name=name,
                 progress=not args.quiet, clock=clock(args))


def clock(args):
    return time.process_time if args.cpu_time else time.perf_counter


def evaluate(model, dirs, view, dims):
    """{direction label: {dim: {1: recall@1, 10: recall@10}}}; each candidate list embedded once."""
    model.eval()
    cache, out = {}, {}
    for d in dirs:
        if id(d.candidates) not in cache:
            cache[id(d.candidates)] = model.embed([view(i) for i in d.candidates])
        q, c, correct = model.embed([view(i) for i in d.queries]), cache[id(d.candidates)], \
            d.correct()
        out[label(d)] = {k: recall(q, c, correct, dim=k) for k in dims}
    model.train()
    return out


def label(direction):
    return f"{direction.name} ({direction.hidden})" if direction.hidden else direction.name


def generated_captions(captioner, pools, batch_size=64):
    """id(example) -> the captioner's greedy caption, for every example of the pools."""
    examples = [e for examples in pools.sets.values() for e in examples]
    captioner.eval()
    out = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        texts = captioner.caption([captioner_prompt(captioner.vocab, e, with_caption=False)
                                   for e in chunk])
        out.update({id(e): t or "a" for e, t in zip(chunk, texts)})   # "a": an empty caption
    return out


SYSTEMS = ("unified", "full-dim", "late fusion", "text pipeline")


def run(args):
    """The whole demo; returns the JSON summary (a dict). The systems train args.jobs at a time,
    each in a process of its own (forked after the data are drawn) with args.threads threads."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train_pools, eval_pools = Pools(args.n_train, args.seed), Pools(args.n_eval, args.seed + 100)
    dirs = directions(eval_pools, args.queries, args.n_eval // 2, args.seed)
    dims = tuple(args.d_embed // f for f in (32, 16, 8, 4, 2, 1))
    data_seconds = time.perf_counter() - start
    _SHARED.update(args=args, train_pools=train_pools, eval_pools=eval_pools, dirs=dirs,
                   dims=dims)
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(SYSTEMS))) as pool:
            done = pool.map(train_system, SYSTEMS, chunksize=1)
    else:
        done = [train_system(system) for system in SYSTEMS]
    _SHARED.clear()
    results = {system: result for system, (result, _) in zip(SYSTEMS, done)}
    trained = {name: t for _, summaries in done for name, t in summaries.items()}
    summary = summarise(results, dirs, dims, trained, time.perf_counter() - start, data_seconds,
                        args.cpu_time)
    print(tables(summary))
    if args.plot:
        plot(summary, args.plot)
        print(f"plot: {args.plot}")
    return summary


_SHARED = {}      # run()'s data, read by train_system in this process or in a forked one


def train_system(system):
    """Trains and evaluates one of SYSTEMS on run()'s data; (results, {name: train summary})."""
    args, pools, dirs, dims = (_SHARED[k] for k in ("args", "train_pools", "dirs", "dims"))
    torch.set_num_threads(args.threads)
    vocab = Vocab.for_captions()

    def embedder(fusion):
        torch.manual_seed(args.seed)
        return MultimodalEmbedder(vocab, d_embed=args.d_embed, matryoshka_dims=dims,
                                  fusion=fusion, temperature=args.temperature, inputs=INPUTS)

    if system != "text pipeline":
        fusion, loss_dims = {"unified": ("early", None), "full-dim": ("early", (args.d_embed,)),
                             "late fusion": ("late", None)}[system]
        model = embedder(fusion)
        trained = fit(model, pools, raw, args.time_budget, args, system, loss_dims)
        return evaluate(model, dirs, raw, dims), {system: trained}
    captioner = captioner_demo.build(vocab, seed=args.seed, config=INPUTS)
    trained = {"captioner": captioner_demo.fit(
        captioner, pools.sets, 0.8 * args.time_budget, per_kind=captioner_demo.PER_KIND,
        lr=3e-3, seed=args.seed, progress=not args.quiet, name="captioner", clock=clock(args))}
    text_model = embedder("early")
    trained[system] = fit(text_model, pools, as_text(lambda e: e.caption),
                          0.2 * args.time_budget, args, "text embedder")
    captions = generated_captions(captioner, _SHARED["eval_pools"])
    return evaluate(text_model, dirs, as_text(lambda e: captions[id(e)]), dims), trained


def summarise(results, dirs, dims, trained, seconds, data_seconds, cpu_time):
    named = [label(d) for d in dirs if not d.hidden]
    mean_r1 = {s: [round(sum(results[s][n][k][1] for n in named) / len(named), 4) for k in dims]
               for s in results}
    return {"dims": list(dims),
            "recall": {s: {n: {"r1": round(r[dims[-1]][1], 4), "r10": round(r[dims[-1]][10], 4)}
                           for n, r in results[s].items()} for s in results},
            "chance": {label(d): round(chance(d.correct()), 4) for d in dirs},
            "mean_r1_by_dim": mean_r1,
            "train": {s: {"steps": t["steps"], "seconds": round(t["seconds"], 1)}
                      for s, t in trained.items()},
            "seconds": {"total": round(seconds, 1), "data": round(data_seconds, 1)},
            "threads": torch.get_num_threads(), "clock": "cpu" if cpu_time else "wall"}


def tables(summary):
    pct = lambda x: f"{100 * x:5.1f}"                                   # noqa: E731
    systems = list(summary["recall"])
    lines = ["recall@1 / recall@10 at the full dimension, held-out items (chance: a random "
             "ranking's recall@1)",
             f"{'direction':<26}" + "".join(f"{s:>18}" for s in systems) + f"{'chance':>9}"]
    for name, c in summary["chance"].items():
        if "(" in name:
            continue
        lines.append(f"{name:<26}" + "".join(
            f"{pct(summary['recall'][s][name]['r1']):>11} /{pct(summary['recall'][s][name]['r10'])}"
            for s in systems) + f"{pct(c):>9}")
    lines += ["", "attributes no caption names: the top-1 candidate has the query's value",
              f"{'direction (attribute)':<26}" + "".join(f"{s:>18}" for s in systems)
              + f"{'chance':>9}"]
    for name, c in summary["chance"].items():
        if "(" in name:
            lines.append(f"{name:<26}" + "".join(f"{pct(summary['recall'][s][name]['r1']):>18}"
                                                 for s in systems) + f"{pct(c):>9}")
    lines += ["", "Matryoshka: mean recall@1 over the named directions by prefix size",
              f"{'dim':<26}" + "".join(f"{s:>18}" for s in systems)]
    for i, k in enumerate(summary["dims"]):
        lines.append(f"{k:<26}" + "".join(f"{pct(summary['mean_r1_by_dim'][s][i]):>18}"
                                          for s in systems))
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, values in summary["mean_r1_by_dim"].items():
        ax.plot(summary["dims"], [100 * v for v in values], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding dimensions kept (Matryoshka prefix)")
    ax.set_ylabel("mean recall@1, named directions (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
