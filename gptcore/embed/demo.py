"""The Matryoshka demo (`gptcore embed-demo`, command line in cli.py): train a Matryoshka
embedding model and a full-dimension baseline on the corrupted-names task with the same budget,
seed and batches, then print retrieval accuracy per prefix size and the funnel; run() returns
the JSON summary."""
import random
import time

import torch

from gptcore.training import data
from gptcore.model.config import GPTConfig
from gptcore.embed.metrics import funnel_accuracy, topk_accuracy
from gptcore.embed.model import EmbeddingModel
from gptcore.embed.pooling import pack
from gptcore.embed.task import corrupt, make_task
from gptcore.training.config import TrainConfig
from gptcore.training.objective import Objective
from gptcore.training.train import train


class PairBatches:
    """batches(step): batch_size distinct training names and a fresh corruption of each, packed
    together (names first, copies after) as {"idx", "cu_seqlens", "max_seqlen"}; deterministic
    in (seed, step), so both models of the demo see the same data."""

    def __init__(self, names, tokenize, batch_size, seed):
        self.names, self.tokenize, self.batch_size, self.seed = sorted(set(names)), tokenize, \
            batch_size, seed
        if not 2 <= batch_size <= len(self.names):
            raise ValueError(f"batch_size: expected 2..{len(self.names)} (distinct names), "
                             f"got {batch_size}")

    def __call__(self, step):
        rng = random.Random(self.seed * 1_000_003 + step)
        names = rng.sample(self.names, self.batch_size)
        taken = set(names)
        copies = [corrupt(n, rng, avoid=taken) for n in names]
        tokens, cu_seqlens, max_seqlen = pack(self.tokenize(names + copies))
        return {"idx": tokens, "cu_seqlens": cu_seqlens, "max_seqlen": max_seqlen}


def pair_loss(dims):
    """loss_fn(model, batch) for gptcore.training.train: Matryoshka InfoNCE over `dims` of a batch of
    PairBatches."""
    def loss_fn(model, batch):
        z = model(batch["idx"], batch["cu_seqlens"], batch["max_seqlen"])     # (2N, d_embed)
        a, b = z.chunk(2)
        return model.loss(a, b, dims)
    return loss_fn


def evaluate(model, task, dims, shortlist=10, clock=time.perf_counter):
    """({dim: top1, top10, funnel_top1, funnel_top10}, names embedded per second of `clock`) on a
    RetrievalTask: top-k on each prefix, and the funnel (shortlist on the prefix, re-rank with
    the full vector)."""
    model.eval()
    start = clock()
    queries, candidates = model.embed(task.queries), model.embed(task.candidates)
    rate = (len(task.queries) + len(task.candidates)) / (clock() - start)
    targets = torch.tensor(task.targets, device=queries.device)
    rows = {}
    for k in dims:
        acc = topk_accuracy(queries, candidates, targets, dim=k)
        funnel = funnel_accuracy(queries, candidates, targets, dim=k, shortlist=shortlist)
        rows[k] = {"top1": acc[1], "top10": acc[10], "funnel_top1": funnel[1],
                   "funnel_top10": funnel[10]}
    return rows, rate


def table(dims, mrl, base, shortlist):
    """One row per prefix size (bytes per fp32 vector), then the MRL model's funnel rows."""
    pct = "{:.1f}".format
    head = ["dim", "MRL top-1", "MRL top-10", "baseline top-1", "baseline top-10", "bytes/vector"]
    rows = [[str(k), pct(100 * mrl[k]["top1"]), pct(100 * mrl[k]["top10"]),
             pct(100 * base[k]["top1"]), pct(100 * base[k]["top10"]), str(4 * k)] for k in dims]
    rows += [[f"{k}->{dims[-1]}", pct(100 * mrl[k]["funnel_top1"]),
              pct(100 * mrl[k]["funnel_top10"]), "", "", str(4 * k)] for k in dims[:-1]]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: " | ".join(c.rjust(w) for c, w in zip(r, widths))          # noqa: E731
    out = [line(head), "-+-".join("-" * w for w in widths)] + [line(r) for r in rows[:len(dims)]]
    out.append(f"funnel (MRL): shortlist {shortlist} on the first k dims, "
               f"re-rank with all {dims[-1]}")
    return "\n".join(out + [line(r) for r in rows[len(dims):]])


def run(args):
    """The whole demo; returns the JSON summary (a dict)."""
    torch.set_num_threads(args.threads)
    d, dims = args.d_embed, tuple(args.d_embed // f for f in (16, 8, 4, 2, 1))
    names = data.load_names()
    train_names, val_names = data.split(names, 0.1, seed=0)
    tasks = {"plain": make_task(val_names, seed=args.seed + 1)}
    if "hard" in args.tasks:
        tasks["hard"] = make_task(val_names, seed=args.seed + 1, pool=names)
    config = GPTConfig.preset("names", causal=args.causal, n_layer=args.n_layer)
    clock = time.process_time if args.cpu_time else time.perf_counter
    results, trained, start = {}, {}, time.perf_counter()
    for label, loss_dims in (("mrl", dims), ("baseline", (d,))):
        torch.manual_seed(args.seed)
        model = EmbeddingModel(config, d_embed=d, matryoshka_dims=dims, head=args.head,
                               temperature=args.temperature)
        batches = PairBatches(train_names, model.tokenize, args.batch_size, args.seed)
        recipe = TrainConfig(steps=args.steps, lr=args.lr, warmup=50, weight_decay=0.01,
                             time_budget=args.time_budget, seed=args.seed)
        trained[label] = train(model, batches, recipe, objective=Objective(pair_loss(loss_dims)),
                               clock=clock, name=label, progress=not args.quiet)
        results[label] = {t: evaluate(model, task, dims, args.shortlist, clock)
                          for t, task in tasks.items()}
    seconds = time.perf_counter() - start
    for t, task in tasks.items():
        note = " (incl. every name within 1 edit of a target)" if t == "hard" else ""
        print(f"\n{t} task: {len(task.queries)} corrupted held-out names, "
              f"{len(task.candidates)} candidates{note}")
        print(table(dims, results["mrl"][t][0], results["baseline"][t][0], args.shortlist))
    rate = results["mrl"]["plain"][1]
    for label, s in trained.items():
        trained_rate = 2 * args.batch_size * s["steps"] / max(s["seconds"], 1e-9)
        print(f"{label}: {s['steps']} steps in {s['seconds']:.0f} s "
              f"({trained_rate:,.0f} names/s trained)")
    print(f"embedding: {rate:,.0f} names/s (packed varlen, no padding; "
          f"backend {trained['mrl']['backend']})")
    top1 = lambda label, t: [round(results[label][t][0][k]["top1"], 4) for k in dims]  # noqa: E731
    hard = {"hard_mrl_top1": top1("mrl", "hard"),
            "hard_baseline_top1": top1("baseline", "hard")} if "hard" in tasks else {}
    return {"dims": list(dims), "mrl_top1": top1("mrl", "plain"),
            "baseline_top1": top1("baseline", "plain"), "seconds": round(seconds, 1), **hard,
            "mrl_funnel_top1": [round(results["mrl"]["plain"][0][k]["funnel_top1"], 4)
                                for k in dims],
            "steps": [trained["mrl"]["steps"], trained["baseline"]["steps"]],
            "train_seconds": [trained["mrl"]["seconds"], trained["baseline"]["seconds"]],
            "names_per_s": round(rate, 1), "threads": torch.get_num_threads(),
            "clock": "cpu" if args.cpu_time else "wall", "backend": trained["mrl"]["backend"]}
