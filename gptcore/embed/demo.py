"""`gptcore embed-demo`: train a Matryoshka embedding model and a full-dimension baseline on the
corrupted-names task with the same budget and seed, then print retrieval accuracy per prefix size."""
import json
import random
import time

import torch

from gptcore.embed.metrics import funnel_accuracy, topk_accuracy
from gptcore.embed.pooling import pack


class PairBatches:
    """Endless batches of positive pairs: batch_size distinct names and a fresh corruption of each,
    packed together as (tokens, cu_seqlens, max_seqlen) with the names first, the copies after."""

    def __init__(self, names, tokenize, batch_size, seed):
        from gptcore.embed.task import corrupt
        self.names, self.tokenize, self.batch_size = sorted(set(names)), tokenize, batch_size
        self.rng, self.corrupt = random.Random(seed), corrupt
        if batch_size < 2 or batch_size > len(self.names):
            raise ValueError(f"batch_size: expected 2..{len(self.names)} (distinct names), got {batch_size}")

    def __iter__(self):
        return self

    def __next__(self):
        names = self.rng.sample(self.names, self.batch_size)
        taken = set(names)
        copies = [self.corrupt(n, self.rng, avoid=taken) for n in names]
        return pack(self.tokenize(names + copies))


def pair_loss(dims):
    """loss_fn(model, batch) for the training loop: Matryoshka InfoNCE over `dims` of one packed batch."""
    def loss_fn(model, batch):
        z = model(*batch)                                                     # (2N, d_embed)
        a, b = z.chunk(2)
        return model.loss(a, b, dims)
    return loss_fn


def evaluate(model, task, dims, shortlist=100):
    """Top-1/top-10 per prefix size on a RetrievalTask, the funnel (shortlist on each prefix,
    re-rank with the full vector), and names embedded per second."""
    model.eval()
    start = time.perf_counter()
    queries = model.embed(task.queries)
    candidates = model.embed(task.candidates)
    seconds = time.perf_counter() - start
    targets = torch.tensor(task.targets)
    rows = {}
    for k in dims:
        acc = topk_accuracy(queries, candidates, targets, dim=k)
        funnel = funnel_accuracy(queries, candidates, targets, dim=k, shortlist=shortlist)
        rows[k] = {"top1": acc[1], "top10": acc[10], "funnel_top1": funnel[1], "funnel_top10": funnel[10]}
    return rows, (len(task.queries) + len(task.candidates)) / seconds


def table(dims, mrl, base, shortlist):
    """The demo's table: one row per prefix size, then the funnel rows of the MRL model."""
    pct = lambda x: f"{100 * x:6.1f}"                                           # noqa: E731
    lines = [f"{'dim':>5} | {'MRL top-1':>9} | {'MRL top-10':>10} | {'base top-1':>10} | "
             f"{'base top-10':>11} | {'bytes/vector':>12}"]
    lines.append("-" * len(lines[0]))
    for k in dims:
        lines.append(f"{k:>5} | {pct(mrl[k]['top1']):>9} | {pct(mrl[k]['top10']):>10} | "
                     f"{pct(base[k]['top1']):>10} | {pct(base[k]['top10']):>11} | {4 * k:>12}")
    lines.append(f"funnel (MRL): shortlist {shortlist} by the first dims, re-rank with all {dims[-1]}")
    for k in dims[:-1]:
        lines.append(f"{k:>5} | {pct(mrl[k]['funnel_top1']):>9} | {pct(mrl[k]['funnel_top10']):>10} | "
                     f"{'':>10} | {'':>11} | {4 * k:>12}")
    return "\n".join(lines)


def summary(dims, mrl, base, seconds, **extra):
    """The demo's last line: one JSON object."""
    return json.dumps({"dims": list(dims), "mrl_top1": [round(mrl[k]["top1"], 4) for k in dims],
                       "baseline_top1": [round(base[k]["top1"], 4) for k in dims],
                       "seconds": round(seconds, 1), **extra})
