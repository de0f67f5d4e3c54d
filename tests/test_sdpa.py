"""gptcore.scaled_dot_product_attention equals torch.nn.functional.scaled_dot_product_attention
(outputs and gradients) over masks, causal alignments, GQA and ranks; sdpa_override switches
torch's function and undoes it; the fast paths really run gptcore's kernels."""
import logging

import pytest
import torch
import torch.nn.functional as F

import gptcore
from gptcore.ops import sdpa

TORCH_SDPA = F.scaled_dot_product_attention
# fp32 softmax attention, D=16, Sk <= 11, two summation orders: a few ulps of O(1) values.
TOL = dict(atol=2e-5, rtol=2e-5)


def key_padding(B, Sk, kind, seed):
    """A (B, 1, 1, Sk) mask hiding a different set of keys per batch row (not only a suffix)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(B, 1, 1, Sk, generator=g) > 0.35
    keep[..., 0] = True
    if kind == "bool":
        return keep
    return torch.zeros(B, 1, 1, Sk).masked_fill(~keep, float("-inf"))


def general_mask(B, Sq, Sk, kind, seed):
    """A per-query mask (B, 1, Sq, Sk): what gptcore cannot express, so torch's SDPA runs."""
    g = torch.Generator().manual_seed(seed)
    if kind == "bool":
        keep = torch.rand(B, 1, Sq, Sk, generator=g) > 0.3
        keep[..., 0] = True
        return keep
    return torch.randn(B, 1, Sq, Sk, generator=g)


def forward_backward(fn, q, k, v, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, **kw)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
    return out, [t.grad for t in leaves]


def assert_matches_torch(q, k, v, tol=TOL, **kw):
    want, want_grads = forward_backward(TORCH_SDPA, q, k, v, **kw)
    got, got_grads = forward_backward(gptcore.scaled_dot_product_attention, q, k, v, **kw)
    torch.testing.assert_close(got, want, **tol)
    for name, a, b in zip("qkv", got_grads, want_grads):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"d{name}: {m}")


@pytest.fixture
def no_fallback(monkeypatch):
    """Fails the test if torch's SDPA is called: the fast paths must not fall back."""
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to torch's SDPA")
    monkeypatch.setattr(sdpa, "_TORCH_SDPA", refuse)


MASKS = ["none", "causal", "pad_bool", "pad_float"]


@pytest.mark.parametrize("Sq,Sk", [(4, 9), (7, 7), (11, 5), (1, 6), (6, 1)])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (3, 1)])
def test_fast_paths_match_torch_sdpa(no_fallback, Sq, Sk, mask, heads):
    torch.manual_seed(Sq * 31 + Sk)
    (Hq, Hkv), B, D = heads, 3, 16
    q, k, v = torch.randn(B, Hq, Sq, D), torch.randn(B, Hkv, Sk, D), torch.randn(B, Hkv, Sk, D)
    kw = {"enable_gqa": Hq != Hkv, "is_causal": mask == "causal"}
    if mask.startswith("pad"):
        kw["attn_mask"] = key_padding(B, Sk, mask[4:], seed=Sq)
    assert_matches_torch(q, k, v, **kw)


@pytest.mark.parametrize("mask", MASKS)
def test_rank3_inputs_and_scale(no_fallback, mask):
    torch.manual_seed(1)
    B, Sq, Sk, D = 2, 6, 8, 16
    q, k, v = torch.randn(B, Sq, D), torch.randn(B, Sk, D), torch.randn(B, Sk, D)
    kw = {"is_causal": mask == "causal", "scale": 0.3}
    if mask.startswith("pad"):
        kw["attn_mask"] = key_padding(B, Sk, mask[4:], seed=2).squeeze(1)   # (B, 1, Sk)
    assert_matches_torch(q, k, v, **kw)


def test_broadcast_key_padding_and_bf16(no_fallback):
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 4, 5, 16).bfloat16() for _ in range(3))
    mask = key_padding(1, 5, "bool", seed=3)                        # (1, 1, 1, Sk): every row
    # bf16 inputs; both sides round the output to bf16 (2^-8 relative), different orders.
    assert_matches_torch(q, k, v, tol=dict(atol=2e-2, rtol=2e-2), attn_mask=mask)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_other_masks_fall_back_to_torch_with_one_log_line(caplog, kind):
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 2, 5, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = general_mask(2, 5, 7, kind, seed=4)
    sdpa._logged.clear()
    with caplog.at_level(logging.WARNING, logger="gptcore"):
        assert_matches_torch(q, k, v, attn_mask=mask)
        gptcore.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    lines = [r for r in caplog.records if "torch's SDPA" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]


def test_float64_falls_back_and_still_matches():
    q, k, v = (torch.randn(1, 2, 3, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(gptcore.scaled_dot_product_attention(q, k, v, is_causal=True),
                               TORCH_SDPA(q, k, v, is_causal=True), atol=0, rtol=0)


def test_torch_errors_stay_torchs():
    q = torch.randn(1, 2, 3, 8)
    k = torch.randn(1, 1, 3, 8)
    with pytest.raises(RuntimeError):   # torch's own error: GQA heads without enable_gqa
        gptcore.scaled_dot_product_attention(torch.randn(1, 4, 3, 8), q, q)
    # torch broadcasts a single kv head without enable_gqa; so does the fallback
    torch.testing.assert_close(gptcore.scaled_dot_product_attention(q, k, k),
                               TORCH_SDPA(q, k, k), atol=0, rtol=0)


def test_sdpa_override_context_and_undo():
    q = torch.randn(1, 2, 4, 8)
    assert F.scaled_dot_product_attention is TORCH_SDPA
    with gptcore.sdpa_override():
        assert F.scaled_dot_product_attention is gptcore.scaled_dot_product_attention
        torch.testing.assert_close(F.scaled_dot_product_attention(q, q, q, is_causal=True),
                                   TORCH_SDPA(q, q, q, is_causal=True), **TOL)
    assert F.scaled_dot_product_attention is TORCH_SDPA
    handle = gptcore.sdpa_override()
    try:
        assert F.scaled_dot_product_attention is gptcore.scaled_dot_product_attention
    finally:
        handle.undo()
    handle.undo()                                   # a second undo changes nothing
    assert F.scaled_dot_product_attention is TORCH_SDPA


class TinyCausalSelfAttention(torch.nn.Module):
    """nanoGPT's attention block, calling F.scaled_dot_product_attention at run time."""

    def __init__(self, C=32, H=4):
        super().__init__()
        self.H = H
        self.qkv, self.proj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2)
                   for t in self.qkv(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def test_compiled_model_with_override_matches_eager():
    torch.manual_seed(4)
    model, x = TinyCausalSelfAttention(), torch.randn(2, 9, 32)
    want = model(x)
    with gptcore.sdpa_override():
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        got = compiled(x)
    # gptcore's kernel vs torch's, fp32: rounding only.
    torch.testing.assert_close(got, want, **TOL)
