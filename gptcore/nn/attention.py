"""gptcore.nn.Attention: multi-head self-attention (GQA, RoPE, windows, sinks) over gptcore.attention."""
import torch
from torch import nn

import gptcore


def rotary(x, positions, theta):
    """Rotary position embedding, rotate-half form (Llama / Hugging Face). x (B, H, S, D), D even."""
    D = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    angles = positions.float()[:, None] * inv_freq[None, :]           # (S, D/2)
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)    # (S, D)
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class KVCache:
    """Keys and values seen so far, (B, Hkv, S, D) each, for incremental decoding."""

    def __init__(self):
        self.k = self.v = None

    @property
    def length(self):
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat((self.k, k), dim=2)
        self.v = v if self.v is None else torch.cat((self.v, v), dim=2)
        return self.k, self.v


class Attention(nn.Module):
    """Self-attention: x (B, S, d_model) -> (B, S, d_model).

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

    def forward(self, x, cache=None):
        """x (B, S, d_model); `cache` (a KVCache) makes this step attend to earlier steps too."""
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, D)
        k, v = self.kv_proj(x).view(B, S, 2, self.n_kv_heads, self.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)                    # (B, Hkv, S, D)
        start = 0 if cache is None else cache.length
        if self.rope_theta is not None:
            positions = torch.arange(start, start + S, device=x.device)
            q, k = rotary(q, positions, self.rope_theta), rotary(k, positions, self.rope_theta)
        if cache is not None:
            k, v = cache.append(k, v)                                  # (B, Hkv, start + S, D)
        out = gptcore.attention(q, k, v, causal=self.causal, window=self.window, sinks=self.sinks)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1))
