"""gptcore.ref against the naive loops of tests/naive.py: outputs for every op and option over odd
shapes, gradients by torch.autograd.gradcheck in fp64, and attention's memory at S=4096."""
import json
import os
import subprocess
import sys

import pytest
import torch

import gptcore
import gptcore.backends.ref  # noqa: F401  (defines the torch.ops.gptcore.ref_* ops)
from gptcore import ref

import naive

# fp32 accumulation against fp64 loops over at most ~100 terms of O(1) values.
ATOL, RTOL = 2e-5, 2e-5


def close(actual, expected, atol=ATOL, rtol=RTOL):
    """assert_close that reports the max difference (and matches -inf with -inf)."""
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(params=["ref", "api"])
def impl(request):
    """ref: gptcore.ref called directly; api: the public function under gptcore.backend("ref")."""
    return request.param


def call(impl, name, *args, **kwargs):
    if impl == "ref":
        return getattr(ref, name)(*args, **kwargs)
    with gptcore.backend("ref"):
        return getattr(gptcore, name)(*args, **kwargs)


# ----------------------------------------------------------------------------- attention

# (B, Hq, Hkv, Sq, Sk, D): S=1/D=1, GQA with D=80 and Sq < Sk, MQA with Sq > Sk, a decode step.
ATTN_SHAPES = [(1, 1, 1, 1, 1, 1), (2, 4, 2, 5, 7, 80), (1, 3, 1, 7, 4, 16), (1, 2, 2, 1, 9, 8)]
ATTN_OPTIONS = [
    {},
    {"causal": True},
    {"window": 2},
    {"window": 3, "causal": True},
    {"window": (2, -1)},
    {"window": (-1, 1)},
    {"window": (0, 0)},
    {"window": (1, 2), "causal": True},
    {"sinks": True},
    {"softcap": 2.0, "scale": 1.5},
    {"causal": True, "window": 2, "sinks": True, "softcap": 3.0, "scale": 0.7},
]


def _attention_inputs(B, Hq, Hkv, Sq, Sk, D, options, dtype=torch.float32):
    q = randn(B, Hq, Sq, D, seed=1)
    k, v = randn(B, Hkv, Sk, D, seed=2), randn(B, Hkv, Sk, D, seed=3)
    options = dict(options)
    if options.pop("sinks", False):
        options["sinks"] = randn(Hq, seed=4)
    return [t.to(dtype) for t in (q, k, v)], options


@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=str)
@pytest.mark.parametrize("options", ATTN_OPTIONS, ids=str)
def test_attention_matches_naive(shape, options, impl):
    (q, k, v), options = _attention_inputs(*shape, options)
    out, lse = call(impl, "attention", q, k, v, return_lse=True, **options)
    want_out, want_lse = naive.attention(q, k, v, **options)
    assert out.dtype == q.dtype and lse.dtype == torch.float32
    assert not out.isnan().any()
    close(out, want_out)
    close(lse, want_lse)


def test_attention_row_with_no_visible_key_is_zero():
    """Causal with Sq > Sk: the first Sq - Sk rows sit before key 0 and see nothing."""
    (q, k, v), _ = _attention_inputs(1, 2, 1, 6, 3, 4, {})
    out, lse = ref.attention(q, k, v, causal=True, return_lse=True)
    assert torch.equal(out[:, :, :3], torch.zeros_like(out[:, :, :3]))
    assert torch.isneginf(lse[:, :, :3]).all() and torch.isfinite(lse[:, :, 3:]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_half_dtypes(dtype):
    (q, k, v), options = _attention_inputs(1, 2, 1, 5, 6, 16, {"causal": True, "sinks": True},
                                           dtype=dtype)
    out = ref.attention(q, k, v, **options)
    assert out.dtype == dtype
    # only the final rounding to 8 (bf16) / 11 (fp16) mantissa bits of values of size ~1
    close(out, naive.attention(q, k, v, **options)[0], atol=1e-2, rtol=1e-2)


GRAD_OPTIONS = [{}, {"causal": True, "sinks": True}, {"window": (1, 2), "softcap": 2.0},
                {"causal": True, "window": 2, "sinks": True, "softcap": 1.5, "scale": 0.8}]


@pytest.mark.parametrize("options", GRAD_OPTIONS, ids=str)
def test_attention_gradcheck(options):
    (q, k, v), options = _attention_inputs(1, 4, 2, 3, 5, 3, options, dtype=torch.float64)
    tensors = [q, k, v] + ([options.pop("sinks").double()] if "sinks" in options else [])
    tensors = [t.requires_grad_() for t in tensors]

    def direct(q, k, v, sinks=None):
        return ref.attention(q, k, v, sinks=sinks, return_lse=True, **options)

    left, right = ref.window_bounds(options.get("causal", False), options.get("window"))
    scale = options.get("scale", 3 ** -0.5)

    def as_op(q, k, v, sinks=None):   # the ref_ op with its registered autograd (dlse path too)
        return torch.ops.gptcore.ref_attention_fwd(q, k, v, sinks, scale, left, right,
                                                   options.get("softcap", 0.0))
    assert torch.autograd.gradcheck(direct, tensors)
    assert torch.autograd.gradcheck(as_op, tensors)


def test_attention_gradient_of_fully_masked_rows_is_finite():
    (q, k, v), _ = _attention_inputs(1, 2, 1, 5, 2, 4, {})
    sinks = randn(2, seed=5).requires_grad_()
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    with gptcore.backend("ref"):
        out, lse = gptcore.attention(q, k, v, causal=True, sinks=sinks, return_lse=True)
    (out.sum() + lse.sum()).backward()
    for t in (q, k, v, sinks):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, :3], torch.zeros_like(q.grad[:, :, :3]))  # rows see no key


# ----------------------------------------------------------------------------- varlen

# (cu_seqlens_q, cu_seqlens_k): a zero-length sequence in q and k, one with Sq > Sk, one Sk = 0.
VARLEN = [([0, 3, 3, 7], [0, 4, 4, 9]), ([0, 1, 5, 6], [0, 2, 4, 4]), ([0, 0], [0, 3])]


@pytest.mark.parametrize("cu", VARLEN, ids=str)
@pytest.mark.parametrize("options", ATTN_OPTIONS[:2] + ATTN_OPTIONS[-3:], ids=str)
def test_attention_varlen_matches_naive(cu, options, impl):
    cu_q, cu_k = (torch.tensor(c, dtype=torch.int32) for c in cu)
    Hq, Hkv, D = 4, 2, 5
    q, k, v = randn(cu[0][-1], Hq, D, seed=1), randn(cu[1][-1], Hkv, D, seed=2), \
        randn(cu[1][-1], Hkv, D, seed=3)
    options = dict(options)
    if options.pop("sinks", False):
        options["sinks"] = randn(Hq, seed=4)
    max_q = max(b - a for a, b in zip(cu[0], cu[0][1:]))
    max_k = max(b - a for a, b in zip(cu[1], cu[1][1:]))
    out, lse = call(impl, "attention_varlen", q, k, v, cu_q, cu_k, max_q, max_k, return_lse=True,
                    **options)
    want_out, want_lse = naive.attention_varlen(q, k, v, cu_q, cu_k, **options)
    assert out.shape == (cu[0][-1], Hq, D) and lse.shape == (cu[0][-1], Hq)
    close(out, want_out)
    close(lse, want_lse)


def test_attention_varlen_gradcheck():
    cu_q, cu_k = torch.tensor([0, 2, 2, 5], dtype=torch.int32), torch.tensor([0, 3, 4, 6],
                                                                             dtype=torch.int32)
    q, k, v = randn(5, 2, 3, seed=1), randn(6, 1, 3, seed=2), randn(6, 1, 3, seed=3)
    tensors = [t.double().requires_grad_() for t in (q, k, v, randn(2, seed=4))]

    def direct(q, k, v, sinks):
        return ref.attention_varlen(q, k, v, cu_q, cu_k, 3, 3, causal=True, sinks=sinks,
                                    softcap=2.0, return_lse=True)

    def as_op(q, k, v, sinks):
        return torch.ops.gptcore.ref_attention_varlen_fwd(q, k, v, cu_q, cu_k, 3, 3, sinks, 0.5,
                                                          -1, 0, 2.0)   # causal: right = 0
    assert torch.autograd.gradcheck(direct, tensors)
    assert torch.autograd.gradcheck(as_op, tensors)


# ----------------------------------------------------------------------------- attention memory

_MEMORY_SCRIPT = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
import naive
from gptcore import ref
torch.manual_seed(0)
q, k, v = (torch.randn(1, 8, 4096, 64) for _ in range(3))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = ref.attention(q, k, v, causal=True)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
want, _ = naive.attention(q[:, 3:4, -1:], k[:, 3:4], v[:, 3:4])   # last row sees every key
print(json.dumps({"growth_kb": growth, "diff": float((out[:, 3:4, -1:] - want).abs().max())}))
"""


def test_attention_s4096_never_builds_full_scores():
    """B1 H8 S4096 D64 causal: a full fp32 score tensor is 512 MiB; the chunks stay far below."""
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["growth_kb"] < 512 * 1024, f"peak RSS grew {result['growth_kb'] / 1024:.0f} MiB"
    assert result["diff"] < 1e-5, result   # fp32 sum over 4096 keys of O(1) values


# ----------------------------------------------------------------------------- route

def _logits(T, E, seed=0):
    """Distinct logits (gaps >= 0.1) so fp32 and fp64 agree on the order."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(E, generator=g) * 0.37 - 1.0 for _ in range(T)])


@pytest.mark.parametrize("T,E,top_k", [(1, 7, 7), (5, 7, 2), (6, 8, 1), (3, 2, 2)], ids=str)
@pytest.mark.parametrize("scoring,renormalize,with_bias",
                         [("softmax", True, False), ("softmax", False, False),
                          ("topk_softmax", True, False), ("sigmoid", True, False),
                          ("sigmoid", False, True), ("sigmoid", True, True)], ids=str)
def test_route_matches_naive(T, E, top_k, scoring, renormalize, with_bias, impl):
    logits = _logits(T, E)
    bias = torch.linspace(0.3, -0.3, E) * 0.05 if with_bias else None
    weights, indices = call(impl, "route", logits, top_k, scoring=scoring,
                            renormalize=renormalize, bias=bias)
    want_w, want_i = naive.route(logits, top_k, scoring, renormalize, bias)
    assert weights.dtype == torch.float32 and indices.dtype == torch.int64
    assert torch.equal(indices, want_i), (indices, want_i)
    close(weights, want_w, atol=1e-6, rtol=1e-6)   # fp32 softmax of O(1) logits


def test_route_ties_go_to_lower_index():
    logits = torch.tensor([[1.0, 2.0, 2.0, 1.0, 2.0]])
    for scoring in ("softmax", "topk_softmax", "sigmoid"):
        _, indices = ref.route(logits, 4, scoring=scoring)
        assert indices.tolist() == [[1, 2, 4, 0]], scoring


def test_route_bias_changes_selection_not_weights():
    logits = torch.tensor([[0.0, 0.1, 0.2]])
    bias = torch.tensor([1.0, 0.0, 0.0])
    weights, indices = ref.route(logits, 1, scoring="sigmoid", renormalize=False, bias=bias)
    assert indices.tolist() == [[0]]
    close(weights, torch.sigmoid(torch.tensor([[0.0]])), atol=1e-7, rtol=0)  # one fp32 sigmoid


@pytest.mark.parametrize("scoring,renormalize", [("softmax", True), ("softmax", False),
                                                 ("topk_softmax", True), ("sigmoid", True)])
def test_route_gradcheck(scoring, renormalize):
    logits = _logits(4, 5).double().requires_grad_()
    bias = torch.full((5,), 0.01, dtype=torch.float64) if scoring == "sigmoid" else None
    assert torch.autograd.gradcheck(
        lambda x: ref.route(x, 3, scoring=scoring, renormalize=renormalize, bias=bias)[0],
        (logits,))
    assert torch.autograd.gradcheck(
        lambda x: torch.ops.gptcore.ref_route(x, 3, scoring, renormalize, bias)[0], (logits,))


# ----------------------------------------------------------------------------- public-API grads

def _backward_pair(ours, theirs, seed=9):
    """Backpropagates the same random cotangents through fp32 `ours` and fp64 `theirs`."""
    ours, theirs = (ours,) if torch.is_tensor(ours) else ours, \
        (theirs,) if torch.is_tensor(theirs) else theirs
    cotangents = [randn(*t.shape, seed=seed + n) for n, t in enumerate(ours)]
    torch.autograd.backward(ours, cotangents)
    torch.autograd.backward(theirs, [c.double() for c in cotangents])


@pytest.mark.parametrize("options", GRAD_OPTIONS, ids=str)
def test_attention_api_gradients_match_naive(options):
    (q, k, v), options = _attention_inputs(1, 4, 2, 3, 5, 3, options)
    sinks = options.pop("sinks", None)
    inputs = [t for t in (q, k, v, sinks) if t is not None]
    ours = [t.clone().requires_grad_() for t in inputs]
    theirs = [t.double().requires_grad_() for t in inputs]
    with gptcore.backend("ref"):
        got = gptcore.attention(*ours[:3], sinks=(ours + [None])[3], return_lse=True, **options)
    _backward_pair(got, naive.attention(*theirs[:3], sinks=(theirs + [None])[3], **options))
    for a, b in zip(ours, theirs):
        close(a.grad, b.grad, atol=1e-4, rtol=1e-4)   # fp32 backward through exp/softmax


@pytest.mark.parametrize("scoring", ["softmax", "topk_softmax", "sigmoid"])
def test_route_api_gradients_match_naive(scoring):
    logits = _logits(4, 6)
    ours, theirs = logits.clone().requires_grad_(), logits.double().requires_grad_()
    with gptcore.backend("ref"):
        got = gptcore.route(ours, 3, scoring=scoring)[0]
    _backward_pair(got, naive.route(theirs, 3, scoring)[0])
    close(ours.grad, theirs.grad, atol=1e-6, rtol=1e-5)   # fp32 softmax/sigmoid derivatives
