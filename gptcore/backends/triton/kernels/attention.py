"""Launchers of the Triton attention kernels (FlashAttention-2 forward/backward, split-KV decode)
for dense (B, H, S, D) and packed varlen (T, H, D) tensors. Inputs must be contiguous; masks come
as flash-attn's (left, right) window with causal already folded in (right = 0).
Kernels: attention_fwd.py, attention_decode.py, attention_bwd.py.
"""
import torch

from . import attention_bwd, attention_decode, attention_fwd
from .attention_common import score_scales


def _layout(q, k, lse):
    """(q strides, k strides, lse strides) as (batch, head, row); batch stride 0 when packed
    (rows then start at cu_seqlens[b])."""
    if q.dim() == 4:
        return q.stride()[:3], k.stride()[:3], lse.stride()
    return ((0, q.stride(1), q.stride(0)), (0, k.stride(1), k.stride(0)),
            (0, lse.stride(1), lse.stride(0)))


def _check_offsets(q_strides, kv_strides, max_seq_q, max_seq_k):
    """Kernels index rows inside one sequence with int32 (row * row stride): refuse what would
    overflow instead of reading the wrong rows."""
    for name, rows, stride in (("q", max_seq_q, q_strides[2]), ("k/v", max_seq_k, kv_strides[2])):
        if rows * stride >= 2**31:
            raise ValueError(f"{name}: the Triton attention kernels need sequence length x row "
                             f"stride < 2**31, got {rows} x {stride}")


def _sizes(q, k, cu_q, max_q, max_k):
    """(batch, heads, kv_heads, seq_q, seq_k, max_seq_q, max_seq_k)."""
    if q.dim() == 4:
        B, H, Sq, _ = q.shape
        Hkv, Sk = k.shape[1], k.shape[2]
        return B, H, Hkv, Sq, Sk, Sq, Sk
    return cu_q.numel() - 1, q.shape[1], k.shape[1], 0, 0, max_q, max_k


def forward(q, k, v, sinks, scale, left, right, softcap, cu_q=None, cu_k=None, max_q=0, max_k=0):
    """out (like q), lse fp32 (q's shape without D). q (B, Hq, Sq, D) or (Tq, Hq, D)."""
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    batch, heads, kv_heads, seq_q, seq_k, max_seq_q, max_seq_k = _sizes(q, k, cu_q, max_q, max_k)
    if out.numel() == 0 or batch * heads == 0 or max_seq_q == 0:
        return out, lse.fill_(float("-inf"))
    q_strides, kv_strides, lse_strides = _layout(q, k, lse)
    _check_offsets(q_strides, kv_strides, max_seq_q, max_seq_k)
    score_scale, cap_scale = score_scales(scale, softcap)
    sizes = (batch, heads, heads // kv_heads, seq_q, seq_k, max_seq_q)
    common = (q, k, v, sinks)
    tiles = attention_decode.decode_tiles(q.dtype, q.shape[-1])
    splits = attention_decode.n_splits(batch, heads, heads // kv_heads, max_seq_q, max_seq_k,
                                       tiles)
    if splits == 1:
        attention_fwd.launch(*common, out, lse, cu_q, cu_k, sizes, q_strides, kv_strides,
                             lse_strides, score_scale, cap_scale, left, right, softcap)
        return out, lse
    block_m, block_n, warps = tiles
    keys_per_split = -(-max_seq_k // (splits * block_n)) * block_n       # whole key blocks
    splits = -(-max_seq_k // keys_per_split)
    part_out, part_lse = attention_decode.partials(out, lse, splits)
    split = (splits, keys_per_split, block_m, block_n, warps, out.numel(), lse.numel())
    attention_fwd.launch(*common, part_out, part_lse, cu_q, cu_k, sizes, q_strides, kv_strides,
                         lse_strides, score_scale, cap_scale, left, right, softcap, split=split)
    attention_decode.launch_combine(part_out, part_lse, sinks, out, lse, cu_q,
                                    (batch, heads, seq_q, max_seq_q), q_strides, lse_strides)
    return out, lse


def backward(dout, dlse, q, k, v, out, lse, sinks, scale, left, right, softcap, cu_q=None,
             cu_k=None, max_q=0, max_k=0):
    """(dq, dk, dv, dsinks): dsinks fp32 (Hq,) cast to sinks' dtype, or None without sinks."""
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    sizes = _sizes(q, k, cu_q, max_q, max_k)
    if q.numel() == 0 or k.numel() == 0 or sizes[0] == 0:
        return dq.zero_(), dk.zero_(), dv.zero_(), _sink_grad_without_keys(dout, dlse, out, lse,
                                                                          sinks)
    q_strides, kv_strides, lse_strides = _layout(q, k, lse)
    _check_offsets(q_strides, kv_strides, sizes[5], sizes[6])
    score_scale, cap_scale = score_scales(scale, softcap)
    dsinks = attention_bwd.launch(dout, dlse, q, k, v, out, lse, sinks, dq, dk, dv, cu_q, cu_k,
                                  sizes, q_strides, kv_strides, lse_strides, scale, score_scale,
                                  cap_scale, left, right, softcap)
    return dq, dk, dv, None if dsinks is None else dsinks.to(sinks.dtype)


def _sink_grad_without_keys(dout, dlse, out, lse, sinks):
    """d sinks when no row sees a key: dsink_h = -sum over rows of exp(sink_h - lse) * Delta,
    Delta = rowsum(dO * O) - dlse (as in the kernel); rows of lse sit on dims 0 and 2 (dense)
    or 0 (packed), heads on dim 1."""
    if sinks is None:
        return None
    if lse.numel() == 0:
        return torch.zeros_like(sinks)
    delta = (dout.float() * out.float()).sum(-1) - dlse
    head = [1, -1] + [1] * (lse.dim() - 2)
    p = torch.exp(sinks.float().view(head) - lse)
    p = torch.where(torch.isneginf(lse), 0.0, p)                   # a -inf sink: no gradient
    rows = [d for d in range(lse.dim()) if d != 1]
    return (-(p * delta).sum(rows)).to(sinks.dtype)


def aot_specs():
    """Every attention kernel in each of its GPU configs, for aot.py."""
    return attention_fwd.aot_specs() + attention_decode.aot_specs() + attention_bwd.aot_specs()
