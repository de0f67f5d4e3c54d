"""The Matryoshka loss (Kusupati et al. 2022, MRL): symmetric in-batch InfoNCE on each nested,
L2-normalised prefix of the embedding, summed with weights. With dims=(d_embed,) it is the
plain full-dimension contrastive loss: the baseline."""
import torch
import torch.nn.functional as F


def info_nce(a, b, temperature, same=None):
    """Symmetric in-batch InfoNCE. a, b (N, k), rows L2-normalised; (a[i], b[i]) is a positive
    pair and every b[j], j != i, a negative for a[i] (and a[j] for b[i]). same: optional pair
    of (N, N) bool masks (for a->b, for b->a): same[0][i, j] says b[j] answers a[i] as well as
    b[i] does, so it is left out of a[i]'s negatives (no false negatives when a batch holds
    several items of one class). Returns the mean of the two cross-entropies, a scalar."""
    logits = a @ b.T / temperature                                   # (N, N) cosine / tau
    labels = torch.arange(a.shape[0], device=a.device)
    rows, cols = logits, logits.T
    if same is not None:
        eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
        rows = rows.masked_fill(same[0] & ~eye, float("-inf"))
        cols = cols.masked_fill(same[1] & ~eye, float("-inf"))
    return 0.5 * (F.cross_entropy(rows, labels) + F.cross_entropy(cols, labels))


def check_dims(dims, d_embed, weights=None):
    """(dims, weights) as tuples, or ValueError/TypeError naming what is wrong."""
    dims = tuple(dims)
    if not dims or any(not isinstance(k, int) or isinstance(k, bool) for k in dims):
        raise TypeError(f"dims: expected a non-empty sequence of ints, got {dims!r}")
    if any(k < 1 or k > d_embed for k in dims) or list(dims) != sorted(set(dims)):
        raise ValueError(f"dims: expected strictly increasing ints in [1, {d_embed}], got {dims}")
    weights = (1.0,) * len(dims) if weights is None else tuple(float(w) for w in weights)
    if len(weights) != len(dims) or any(w < 0 for w in weights):
        raise ValueError(f"weights: expected {len(dims)} non-negative numbers (one per dim), "
                         f"got {weights}")
    return dims, weights


def matryoshka_loss(a, b, dims, *, weights=None, temperature=0.05, same=None):
    """sum_k weights[k] * info_nce(normalize(a[:, :dims[k]]), normalize(b[:, :dims[k]])).

    a, b (N, d_embed): raw (unnormalised) embeddings of the two sides of N positive pairs.
    dims: strictly increasing prefix sizes, e.g. (16, 32, 64, 128, 256); weights: one per dim
    (default all 1). temperature: a positive float (fixed) or a scalar tensor (learnable).
    same: the false-negative masks of info_nce, or None."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a, b: expected two (N, d_embed) tensors of one shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if not torch.is_tensor(temperature) and not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature}")
    dims, weights = check_dims(dims, a.shape[1], weights)
    total = a.new_zeros(())
    for k, w in zip(dims, weights):
        total = total + w * info_nce(F.normalize(a[:, :k], dim=-1), F.normalize(b[:, :k], dim=-1),
                                     temperature, same)
    return total
