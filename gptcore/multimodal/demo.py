"""`gptcore multimodal-demo`: trains a captioner on generated images, sounds and videos through
the shared trainer, captions held-out examples and reports exact match and per-attribute
accuracy against chance, plus the video ablation (temporal projector vs frame averaging)."""
import json
import os
import platform
import subprocess
import time

import torch

from gptcore.multimodal import data
from gptcore.multimodal.captioner import Captioner, CaptionerConfig, Vocab, caption_item

REVERSE = {"left": "right", "right": "left", "up": "down", "down": "up",
           "growing": "shrinking", "shrinking": "growing"}


def build(vocab, temporal="conv", seed=0, config=None):
    """A names-sized GPT over the caption words with the three encoders and projectors; config:
    a CaptionerConfig (default: a conv stem of width 32 and the `temporal` video encoder)."""
    from gptcore import GPT, GPTConfig
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig.preset("names", vocab_size=len(vocab), block_size=64))
    return Captioner(gpt, vocab, config or CaptionerConfig(temporal=temporal, stem=32))


# Examples of each kind per training step. Videos get the largest share: telling direction
# takes many clips, while sound is learned completely from few. With the demo's defaults on a
# quiet machine, 16 of each gave video direction 73% (bench/results/multimodal-20261201-103028.json);
# image 16, audio 8, video 32 gave 100%, with image shape 99% and every audio attribute 100%.
PER_KIND = {"image": 16, "audio": 8, "video": 32}


def batches(model, train_sets, per_kind, seed):
    """step -> a packed batch of per_kind examples (an int, or a count per kind) of every kind
    in train_sets (deterministic)."""
    vocab = model.vocab

    def get(step):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        items = []
        for kind, examples in train_sets.items():
            n = per_kind[kind] if isinstance(per_kind, dict) else per_kind
            for i in torch.randint(len(examples), (n,), generator=gen).tolist():
                items.append(caption_item(vocab, examples[i]))
        return model.collate(items)
    return get


def caption_loss(model, batch):
    return model(batch)[1]


# the text model learns at 0.3x the encoders' and projectors' rate. Teacher-forced accuracy after
# 600 single-modality steps (batch 32, lr 2e-3), GPT at 1x / 0.3x: image shape 94% / 99%, video
# direction 58% / 99.5%; at 3x the encoders' outputs collapsed to one vector (between-example
# std / rms 0.005) and nothing but the caption marginal was learned.
LR_SCALES = {"gpt.": 0.3}


def fit(model, train_sets, seconds, *, per_kind, lr, seed, progress, name, stages="all",
        clock=time.perf_counter):
    """Trains for `seconds` through gptcore.training.train.train. stages="llava": first the projectors
    alone against the (randomly initialised) text model and encoders for a fifth of the time,
    then everything (LLaVA's two stages); "all": everything from the start."""
    from gptcore.training.config import TrainConfig
    from gptcore.training.objective import Objective
    from gptcore.training.train import train
    get = batches(model, train_sets, per_kind, seed)
    summaries = []
    plan = [(seconds, {})] if stages == "all" else [
        (0.2 * seconds, {"gpt": False, "encoders": False}), (0.8 * seconds, {})]
    for budget, frozen in plan:
        model.set_trainable(**frozen)
        recipe = TrainConfig(steps=10**9, lr=lr, warmup=20, time_budget=budget, seed=seed,
                             lr_scales=LR_SCALES)
        summaries.append(train(model, get, recipe, objective=Objective(caption_loss),
                               progress=progress, name=name, clock=clock))
        model.set_trainable()
    return summaries[-1] | {"steps": sum(s["steps"] for s in summaries)}


def evaluate(model, examples, batch_size=64):
    """Exact match and per-attribute accuracy of greedy captions; for video also `order`:
    of the clips whose predicted direction is the true one or its reverse, the fraction that
    got the true one (what only temporal order can tell; chance 50%)."""
    model.eval()
    kind = examples[0].kind
    predictions = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        predictions += model.caption([caption_item(model.vocab, e, with_caption=False)
                                      for e in chunk])
    model.train()
    n = len(examples)
    result = {"n": n, "exact": sum(p == e.caption for p, e in zip(predictions, examples)) / n}
    parsed = [data.parse_caption(kind, p) for p in predictions]
    for name in data.ATTRIBUTES[kind]:
        result[name] = sum(p[name] == e.attributes[name] for p, e in zip(parsed, examples)) / n
    if kind == "video":
        pairs = [(p["direction"], e.attributes["direction"]) for p, e in zip(parsed, examples)
                 if p["direction"] in (e.attributes["direction"], REVERSE[e.attributes["direction"]])]
        result["order"] = sum(p == t for p, t in pairs) / max(len(pairs), 1)
    result["examples"] = [[e.caption, p] for e, p in zip(examples[:3], predictions[:3])]
    return result


def chance(kind):
    """Accuracy of guessing: every attribute value is equally likely; exact = all at once."""
    table = {name: 1 / len(values) for name, values in data.ATTRIBUTES[kind].items()}
    exact = 1.0
    for value in table.values():
        exact *= value
    table["exact"] = exact
    if kind == "video":
        table["order"] = 0.5
    return table


def run(time_budget=240.0, seed=0, n_train=2000, n_eval=200, per_kind=None, lr=3e-3,
        stages="all", progress=True, clock=time.perf_counter):
    """The whole demo; returns the results dict (printed as the JSON line by the CLI).
    per_kind: examples of each kind per step (default PER_KIND); the frame-averaging ablation
    sees as many videos per step as the captioner."""
    per_kind = PER_KIND if per_kind is None else per_kind
    t0, cpu0 = time.perf_counter(), time.process_time()
    vocab = Vocab.for_captions()
    train_sets = {k: data.make_dataset(k, n_train, seed=10 * seed + 1 + i)
                  for i, k in enumerate(data.MAKERS)}
    eval_sets = {k: data.make_dataset(k, n_eval, seed=10 * seed + 5 + i)
                 for i, k in enumerate(data.MAKERS)}
    data_seconds = time.perf_counter() - t0
    main = build(vocab, "conv", seed)
    main_train = fit(main, train_sets, 0.75 * time_budget, per_kind=per_kind, lr=lr, seed=seed,
                     progress=progress, name="captioner", stages=stages,
                     clock=clock)
    ablation = build(vocab, "mean", seed)
    ablation_train = fit(ablation, {"video": train_sets["video"]}, 0.25 * time_budget,
                         per_kind=per_kind, lr=lr, seed=seed, progress=progress,
                         name="video, frame averaging", clock=clock)
    t_eval = time.perf_counter()
    results = {kind: evaluate(main, eval_sets[kind]) for kind in data.MAKERS}
    results["video_frame_averaging"] = evaluate(ablation, eval_sets["video"])
    results["chance"] = {kind: chance(kind) for kind in data.MAKERS}
    results["train"] = {"captioner": main_train, "video_frame_averaging": ablation_train}
    results["config"] = main.config_dict() | {"stages": stages, "n_train": n_train,
                                              "per_kind": per_kind, "lr": lr, "seed": seed,
                                              "lr_scales": LR_SCALES, "clock": clock.__name__}
    results["seconds"] = {"data": round(data_seconds, 1),
                          "eval": round(time.perf_counter() - t_eval, 1),
                          "total": round(time.perf_counter() - t0, 1),
                          "cpu_total": round(time.process_time() - cpu0, 1)}
    results["environment"] = environment()
    return results


def format_table(results):
    """The per-modality table and the video ablation, as printed by the CLI."""
    pct = lambda x: f"{100 * x:5.1f}%"   # noqa: E731
    lines = [f"{'modality':<8} {'attribute':<10} {'accuracy':>9} {'chance':>8}"]
    for kind in data.MAKERS:
        r, c = results[kind], results["chance"][kind]
        for name in ["exact"] + list(data.ATTRIBUTES[kind]):
            label = "caption" if name == "exact" else name
            lines.append(f"{kind:<8} {label:<10} {pct(r[name]):>9} {pct(c[name]):>8}")
    lines.append("")
    lines.append("video ablation            direction  order   shape  colour  caption")
    for label, key in (("temporal projector", "video"), ("frame averaging", "video_frame_averaging")):
        r = results[key]
        lines.append(f"{label:<25} {pct(r['direction']):>9} {pct(r['order']):>6} "
                     f"{pct(r['shape']):>6} {pct(r['colour']):>6} {pct(r['exact']):>8}")
    c = results["chance"]["video"]
    lines.append(f"{'chance':<25} {pct(c['direction']):>9} {pct(c['order']):>6} "
                 f"{pct(c['shape']):>6} {pct(c['colour']):>6} {pct(c['exact']):>8}")
    return "\n".join(lines)


def environment():
    """Where a run ran: git commit (None outside a checkout) and whether tracked files differed
    from it, torch version, CPU, threads and
    the load average at the end (the machine may be shared)."""
    here = os.path.dirname(__file__)
    try:
        git = lambda *args: subprocess.run(["git", *args], capture_output=True, text=True,  # noqa: E731
                                           cwd=here, timeout=10).stdout.strip()
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit = dirty = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"commit": commit, "dirty": dirty, "torch": torch.__version__, "cpu": cpu,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def summary_json(results):
    """The figures of the last line: accuracies per modality, chance, steps, seconds, the
    configuration and the environment."""
    keep = {kind: {k: round(v, 4) for k, v in results[kind].items() if isinstance(v, float)}
            for kind in list(data.MAKERS) + ["video_frame_averaging"]}
    keep["chance"] = {kind: {k: round(v, 4) for k, v in c.items()}
                      for kind, c in results["chance"].items()}
    keep["train"] = {name: {k: s[k] for k in ("steps", "seconds", "train_loss", "backend")}
                     for name, s in results["train"].items()}
    keep["seconds"] = results["seconds"]
    keep["config"] = results["config"]
    keep["environment"] = results["environment"]
    return json.dumps(keep)
