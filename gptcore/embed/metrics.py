"""Retrieval metrics by cosine similarity: top-k accuracy on a prefix of the embedding, and the
funnel MRL is used for (shortlist with a short prefix, re-rank the shortlist with the full
vector)."""
import torch
import torch.nn.functional as F


def _prefix(x, dim):
    return F.normalize(x if dim is None else x[:, :dim], dim=-1)


def _check(queries, candidates, targets):
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries, candidates: expected (Q, d) and (C, d), "
                         f"got {tuple(queries.shape)} and {tuple(candidates.shape)}")
    if targets.shape != (queries.shape[0],):
        raise ValueError(f"targets: expected shape ({queries.shape[0]},), "
                         f"got {tuple(targets.shape)}")


@torch.no_grad()
def target_ranks(queries, candidates, targets, dim=None, chunk=1024):
    """For each query, how many other candidates score at least as high as its target (0 = found
    first; ties count against us), by cosine over the first `dim` dimensions. Returns (Q,) int64."""
    _check(queries, candidates, targets)
    q, c = _prefix(queries.float(), dim), _prefix(candidates.float(), dim)
    ranks = []
    for start in range(0, q.shape[0], chunk):
        scores = q[start:start + chunk] @ c.T                                  # (q, C)
        t = targets[start:start + chunk]
        own = scores.gather(1, t[:, None])                                     # (q, 1)
        ranks.append((scores >= own).sum(1) - 1)
    return torch.cat(ranks) if ranks else targets.new_zeros(0)


def topk_accuracy(queries, candidates, targets, dim=None, ks=(1, 10)):
    """{k: fraction of queries whose target is among the top k candidates} on the `dim` prefix."""
    ranks = target_ranks(queries, candidates, targets, dim)
    return {k: (ranks < k).float().mean().item() for k in ks}


@torch.no_grad()
def funnel_accuracy(queries, candidates, targets, dim, shortlist=100, ks=(1, 10), chunk=1024):
    """Shortlist the `shortlist` best candidates by cosine on the first `dim` dimensions, re-rank
    them by cosine on the full vectors; {k: fraction with the target in the re-ranked top k}
    (a target missing from the shortlist is a miss)."""
    _check(queries, candidates, targets)
    qs, cs = _prefix(queries.float(), dim), _prefix(candidates.float(), dim)
    qf, cf = _prefix(queries.float(), None), _prefix(candidates.float(), None)
    m = min(shortlist, candidates.shape[0])
    hits = {k: 0 for k in ks}
    for start in range(0, qs.shape[0], chunk):
        short = (qs[start:start + chunk] @ cs.T).topk(m, dim=1).indices              # (q, m)
        full = torch.einsum("qd,qmd->qm", qf[start:start + chunk], cf[short])        # (q, m)
        order = short.gather(1, full.argsort(dim=1, descending=True))                # (q, m)
        t = targets[start:start + chunk, None]
        for k in ks:
            hits[k] += (order[:, :k] == t).any(1).sum().item()
    return {k: hits[k] / max(qs.shape[0], 1) for k in ks}
