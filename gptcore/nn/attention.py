"""gptcore.nn.Attention: multi-head self-attention (GQA, RoPE, windows, sinks) over
gptcore.attention, gptcore.attention_varlen for packed sequences, and a preallocated KVCache."""
import torch
from torch import nn

import gptcore
from gptcore.nn.kv_cache import KVCache
from gptcore.ops.rotary import rotary_tables


class Attention(nn.Module):
    """Self-attention: x (B, S, d_model) -> (B, S, d_model), or packed x (T, d_model) -> (T,
    d_model) with `cu_seqlens`.

    n_kv_heads < n_heads gives GQA (K/V heads are shared, never copied); `window` and `causal`
    follow gptcore.attention; `sinks=True` learns one sink logit per head (gpt-oss);
    rope_theta=None turns rotary embeddings off."""

    def __init__(self, d_model, n_heads, n_kv_heads=None, head_dim=None, *, causal=True,
                 window=None, sinks=False, rope_theta=10000.0, bias=False):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        if n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads: expected a divisor of n_heads={n_heads}, "
                             f"got {self.n_kv_heads}")
        self.head_dim = head_dim or d_model // n_heads
        if rope_theta is not None and self.head_dim % 2:
            raise ValueError(f"head_dim: rotary embeddings need an even head_dim, got {self.head_dim}")
        self.causal, self.window, self.rope_theta = causal, window, rope_theta
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.sinks = nn.Parameter(torch.zeros(n_heads)) if sinks else None
        self._rope = (None, None)        # cos, sin tables for positions 0..len-1, grown on demand

    def make_cache(self, batch, max_len, *, dtype=torch.float32, device=None):
        """An empty KVCache for this layer: max_len slots, or a ring of the window."""
        return KVCache(batch, self.n_kv_heads, self.head_dim, max_len, window=self.window,
                       dtype=dtype, device=device)

    def _rope_at(self, positions):
        """cos, sin (S, D) at `positions`, read from tables computed once per length."""
        cos, _ = self._rope
        needed = int(positions.max()) + 1 if positions.numel() else 0
        if cos is None or cos.shape[0] < needed or cos.device != positions.device:
            length = max(needed, 2 * (0 if cos is None else cos.shape[0]), 64)
            self._rope = rotary_tables(torch.arange(length, device=positions.device),
                                       self.head_dim, self.rope_theta)
        return self._rope[0][positions], self._rope[1][positions]

    def forward(self, x, cache=None, *, positions=None, cu_seqlens=None, max_seqlen=None):
        """x (B, S, d_model), or (T, d_model) packed with `cu_seqlens` int32 (N+1,).

        `positions` (S,) or packed (T,) int64: each token's position for RoPE (default
        0..S-1, after the cache's positions). `cache` (a KVCache, from make_cache) makes
        this step attend to earlier steps too; not with packed input."""
        if cu_seqlens is not None:
            return self._forward_packed(x, positions, cu_seqlens, max_seqlen)
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim)    # (B, S, H, D)
        k, v = self.kv_proj(x).view(B, S, 2, self.n_kv_heads, self.head_dim).unbind(2)
        if self.rope_theta is not None:
            if positions is None:
                start = 0 if cache is None else cache.length
                positions = torch.arange(start, start + S, device=x.device)
            cos, sin = self._rope_at(positions)                        # (S, D)
            q, k = gptcore.rotary(q, k, cos=cos, sin=sin)              # one op, q and k
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or Hkv, S, D)
        if cache is not None:
            k, v = cache.update(k, v)                                  # (B, Hkv, Sk, D)
        out = gptcore.attention(q, k, v, causal=self.causal, window=self.window, sinks=self.sinks)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1))

    def _forward_packed(self, x, positions, cu_seqlens, max_seqlen):
        T = x.shape[0]
        q = self.q_proj(x).view(T, self.n_heads, self.head_dim)        # (T, H, D)
        k, v = self.kv_proj(x).view(T, 2, self.n_kv_heads, self.head_dim).unbind(1)  # (T, Hkv, D)
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if T else 0
        if self.rope_theta is not None:
            if positions is None:
                positions = packed_positions(cu_seqlens, T)
            cos, sin = self._rope_at(positions)                        # (T, D)
            q, k = gptcore.rotary(q[None], k[None], cos=cos, sin=sin)  # (1, T, H or Hkv, D)
            q, k = q[0], k[0]
        out = gptcore.attention_varlen(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                       causal=self.causal, window=self.window, sinks=self.sinks)
        return self.o_proj(out.reshape(T, -1))                         # (T, d_model)


def packed_positions(cu_seqlens, total):
    """Each packed token's position inside its own sequence: (T,) int64, restarting at 0."""
    starts = cu_seqlens[:-1].long()
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return (torch.arange(total, device=cu_seqlens.device)
            - starts.repeat_interleave(lengths, output_size=total))
