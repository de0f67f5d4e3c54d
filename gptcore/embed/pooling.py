"""Packing variable-length token sequences (no pad tokens); pooling hidden states per sequence."""
import torch

from gptcore.ops import packing


def pack(sequences, device=None):
    """Lists of token ids -> tokens (T,) int64, cu_seqlens (N+1,) int32, max_seqlen: the layout of
    gptcore.attention_varlen. Empty sequences are refused (there is nothing to pool)."""
    lengths = [len(s) for s in sequences]
    if any(n == 0 for n in lengths):
        raise ValueError(f"sequences: expected non-empty token lists, got an empty one at "
                         f"index {lengths.index(0)}")
    tokens = torch.tensor([t for s in sequences for t in s], dtype=torch.int64, device=device)
    return tokens, packing.cu_seqlens(lengths, device), max(lengths, default=0)


def unpad(idx, lengths):
    """Padded ids (B, T) with per-row lengths (B,) -> tokens (sum(lengths),), cu_seqlens,
    max_seqlen."""
    if idx.ndim != 2 or lengths.shape != (idx.shape[0],):
        raise ValueError(f"idx, lengths: expected (B, T) and (B,), got {tuple(idx.shape)} and "
                         f"{tuple(lengths.shape)}")
    if lengths.numel() and (lengths.min() < 1 or lengths.max() > idx.shape[1]):
        raise ValueError(f"lengths: expected values in [1, {idx.shape[1]}], got {lengths.tolist()}")
    keep = torch.arange(idx.shape[1], device=idx.device)[None, :] < lengths[:, None]  # (B, T)
    return (idx[keep], *packing.unpad(keep))


def mean_pool(hidden, cu_seqlens):
    """hidden (T, d) packed -> (N, d): the mean over each sequence's tokens."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()                         # (N,)
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths)
    sums = hidden.new_zeros(len(lengths), hidden.shape[1]).index_add_(0, segment, hidden)
    return sums / lengths.clamp(min=1)[:, None].to(hidden.dtype)


def last_pool(hidden, cu_seqlens):
    """hidden (T, d) packed -> (N, d): each sequence's last token (under a causal trunk, the only
    one that has seen the whole sequence)."""
    return hidden[cu_seqlens[1:].long() - 1]
