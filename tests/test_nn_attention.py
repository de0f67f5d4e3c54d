"""gptcore.nn.Attention against the same layer written out in plain PyTorch."""
import pytest
import torch
import torch.nn.functional as F

import gptcore
from gptcore.nn import Attention


def _plain_attention(layer, x):
    """The layer by hand: separate K/V per query head (expanded), SDPA with an explicit mask."""
    B, S, _ = x.shape
    H, Hkv, D = layer.n_heads, layer.n_kv_heads, layer.head_dim
    q = layer.q_proj(x).view(B, S, H, D).transpose(1, 2)
    k, v = layer.kv_proj(x).view(B, S, 2, Hkv, D).unbind(2)
    k, v = k.transpose(1, 2), v.transpose(1, 2)
    pos = torch.arange(S)
    inv = layer.rope_theta ** (-torch.arange(0, D, 2).float() / D)
    ang = pos[:, None].float() * inv
    cos, sin = torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)
    def rope(t):
        a, b = t[..., : D // 2], t[..., D // 2:]
        return t * cos + torch.cat((-b, a), -1) * sin
    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    mask = pos[None, :] <= pos[:, None]
    if layer.window is not None:
        mask &= pos[:, None] - pos[None, :] < layer.window
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return layer.o_proj(out.transpose(1, 2).reshape(B, S, -1))


@pytest.mark.parametrize("heads,kv_heads,window", [(4, 4, None), (4, 2, None), (6, 1, 3)])
def test_matches_plain_pytorch(heads, kv_heads, window):
    torch.manual_seed(0)
    layer = Attention(48, heads, kv_heads, causal=True, window=window)
    x = torch.randn(2, 11, 48, requires_grad=True)
    with gptcore.backend("ref"):
        y = layer(x)
    expected = _plain_attention(layer, x)
    # fp32 attention computed two ways (chunked online softmax vs SDPA): rounding only.
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    gy = torch.randn_like(y)
    g1 = torch.autograd.grad(y, (x, layer.q_proj.weight), gy)
    g2 = torch.autograd.grad(expected, (x, layer.q_proj.weight), gy)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(1)
    layer = Attention(32, 4, 2, sinks=True)
    torch.nn.init.normal_(layer.sinks)
    x = torch.randn(1, 9, 32)
    with gptcore.backend("ref"), torch.no_grad():
        full = layer(x)
        cache = layer.make_cache(1, 9)
        steps = [layer(x[:, :5], cache)] + [layer(x[:, t:t + 1], cache) for t in range(5, 9)]
    # Same math in a different order of chunks: fp32 rounding only.
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_bad_head_counts():
    with pytest.raises(ValueError, match="n_kv_heads"):
        Attention(32, 4, 3)
    with pytest.raises(ValueError, match="head_dim"):
        Attention(30, 2, head_dim=15)
