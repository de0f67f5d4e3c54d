"""Triton MoE kernels (routing, dispatch index, grouped GEMMs, backward, MXFP4) against
gptcore.ref on CPU, under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1):
outputs and every gradient."""
import pytest
import torch

import gptcore
from checks import close_scaled as close, exact_fp32, gpt_oss_limit, tolerance
from gptcore import ref

pytest.importorskip("triton", reason="the Triton backend needs triton installed")
from gptcore.backends.triton.kernels import moe_route  # noqa: E402

SCORINGS = ("softmax", "topk_softmax", "sigmoid")
ACTIVATIONS = ("silu", "gelu", "gpt_oss")
LIMIT = 1.0  # gpt_oss clamp small enough that the clamps cut random pre-activations
# Expert results, relative to max(1, max |reference|), by how the GEMM products are formed
# (tests/checks.py picks one from the precision in force). ieee: same math, other summation
# order (K <= 64 terms). fp16: inputs are the same fp16 values, but the kernels round the
# (rows, I) activation and d(gate, up) to fp16 (2^-11) and the result goes through a second
# GEMM, so a few fp16 ulps of the largest value. tf32: x, the weights and the activation lose
# their 13 low mantissa bits (truncated, 2^-10 relative) in both GEMMs while the reference keeps
# them; measured max 6.8e-3 (dweights, TF32 emulated on the interpreter over this file and
# tests/test_triton_configs.py), so 3e-2.
MOE_TOL = {"ieee": 1e-5, "tf32": 3e-2, "fp16": 1e-2}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- routing

def _route_both(logits, top_k, scoring, renormalize, bias):
    leaf_t = logits.detach().clone().requires_grad_()
    leaf_r = logits.detach().float().clone().requires_grad_()
    with gptcore.backend("triton"):
        w, i = gptcore.route(leaf_t, top_k, scoring=scoring, renormalize=renormalize, bias=bias)
    wr, ir = ref.route(leaf_r, top_k, scoring=scoring, renormalize=renormalize, bias=bias)
    dw = torch.randn_like(wr)
    (w * dw).sum().backward()
    (wr * dw).sum().backward()
    return (w, i, leaf_t.grad), (wr, ir, leaf_r.grad)


@pytest.mark.parametrize("scoring", SCORINGS)
@pytest.mark.parametrize("renormalize", (True, False))
@pytest.mark.parametrize("T,E,top_k", [(1, 4, 2), (9, 7, 1), (9, 7, 2), (9, 7, 7), (33, 1, 1),
                                       (5, 13, 3)])
@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_route(scoring, renormalize, T, E, top_k, dtype):
    logits = torch.randn(T, E).to(dtype)
    logits[T // 2] = 0.5            # a row of exact ties: lower expert index first
    bias = torch.randn(E) if scoring == "sigmoid" else None
    (w, i, dl), (wr, ir, dlr) = _route_both(logits, top_k, scoring, renormalize, bias)
    assert torch.equal(i, ir), f"indices differ:\n{i}\n{ir}"
    assert w.dtype == torch.float32 and i.dtype == torch.int64
    close("weights", w, wr, 1e-6)    # fp32 math on the same inputs: a few ulps
    # dlogits is returned in the logits' dtype: fp16 rounding (2^-11) bounds it there
    close("dlogits", dl, dlr, 1e-6 if dtype == torch.float32 else 2e-3)


def test_route_sigmoid_without_bias():
    (w, i, dl), (wr, ir, dlr) = _route_both(torch.randn(6, 5), 2, "sigmoid", True, None)
    assert torch.equal(i, ir)
    close("weights", w, wr, 1e-6)    # fp32 math on the same inputs
    close("dlogits", dl, dlr, 1e-6)  # fp32 math on the same inputs


# ----------------------------------------------------------------------------- index

@pytest.mark.parametrize("T,top_k,E,block_m", [(1, 1, 3, 16), (9, 3, 5, 4), (40, 2, 8, 16)])
def test_dispatch_index(T, top_k, E, block_m):
    """The format of docs/moe-index-format.md, checked entry by entry."""
    indices = torch.randint(-1, E - 1, (T, top_k))  # -1 slots and an expert with no tokens
    sorted_slots, offsets, block_expert = moe_route.build_index(indices, E, block_m)
    flat = indices.reshape(-1)
    S = flat.numel()
    counts = torch.bincount(flat[flat >= 0], minlength=E)
    assert torch.equal(moe_route.histogram(indices, E).long(), counts)
    assert sorted_slots.dtype == offsets.dtype == block_expert.dtype == torch.int64
    assert sorted_slots.shape == (S + E * (block_m - 1),)
    assert block_expert.shape == (-(-sorted_slots.numel() // block_m),)
    padded = (counts + block_m - 1) // block_m * block_m
    assert torch.equal(offsets, torch.cat([padded.new_zeros(1), padded.cumsum(0)]))
    for e in range(E):
        lo, n = int(offsets[e]), int(counts[e])
        want = torch.nonzero(flat == e).flatten()                  # ascending slot order
        assert torch.equal(sorted_slots[lo:lo + n], want)
        assert bool((sorted_slots[lo + n:int(offsets[e + 1])] == S).all())
        assert bool((block_expert[lo // block_m:int(offsets[e + 1]) // block_m] == e).all())
    assert bool((sorted_slots[int(offsets[E]):] == S).all())
    assert bool((block_expert[int(offsets[E]) // block_m:] == -1).all())


# ----------------------------------------------------------------------------- experts

def _problem(T, H, I, E, top_k, biases, dtype, indices=None):
    x = torch.randn(T, H)
    if indices is None:
        indices = torch.stack([torch.randperm(E)[:top_k] for _ in range(T)])
    weights = torch.rand(T, top_k)
    gate_up = torch.randn(E, 2 * I, H) / H ** 0.5
    down = torch.randn(E, H, I) / I ** 0.5
    gate_up_bias = torch.randn(E, 2 * I) if "gate_up" in biases else None
    down_bias = torch.randn(E, H) if "down" in biases else None
    cast = [t if t is None else t.to(dtype) for t in (x, weights, gate_up, down, gate_up_bias,
                                                       down_bias)]
    return indices, cast


def _run_experts(indices, tensors, activation, backend, limit=LIMIT):
    """Forward + backward of gptcore.moe_experts; returns y and the grads (None if absent)."""
    leaves = [t if t is None else t.detach().clone().requires_grad_() for t in tensors]
    x, w, gu, dn, gub, db = leaves
    with gptcore.backend(backend):
        y = gptcore.moe_experts(x, indices, w, gu, dn, activation=activation, gate_up_bias=gub,
                                down_bias=db, limit=limit)
    torch.manual_seed(1)
    y.backward(torch.randn_like(y))
    return y, [t if t is None else t.grad for t in leaves]


def _check_experts(indices, tensors, activation, dtype):
    limit = gpt_oss_limit(dtype, LIMIT)
    y, grads = _run_experts(indices, tensors, activation, "triton", limit)
    upcast = [t if t is None else t.float() for t in tensors]
    with exact_fp32():
        yr, grads_r = _run_experts(indices, upcast, activation, "ref", limit)
    tol = tolerance(dtype, MOE_TOL)
    assert y.dtype == dtype
    close("y", y, yr, tol)
    names = ("dx", "dweights", "dgate_up", "ddown", "dgate_up_bias", "ddown_bias")
    for name, g, gr in zip(names, grads, grads_r):
        assert (g is None) == (gr is None), name
        if g is not None:
            assert g.dtype == dtype, name
            close(name, g, gr, tol)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("biases", ((), ("gate_up",), ("down",), ("gate_up", "down")))
def test_experts_activation_bias(activation, biases):
    indices, tensors = _problem(7, 40, 24, 5, 2, biases, torch.float32)
    indices[3, 1] = -1                                              # "no expert" slot
    _check_experts(indices, tensors, activation, torch.float32)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("top_k", (1, 2, 5))
@pytest.mark.parametrize("T", (1, 6))
def test_experts_top_k(activation, top_k, T):
    indices, tensors = _problem(T, 33, 20, 5, top_k, ("gate_up", "down"), torch.float32)
    _check_experts(indices, tensors, activation, torch.float32)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("top_k", (1, 2))
def test_experts_fp16(activation, top_k):
    indices, tensors = _problem(9, 48, 40, 3, top_k, ("gate_up", "down"), torch.float16)
    _check_experts(indices, tensors, activation, torch.float16)


def test_experts_all_tokens_to_one_expert():
    # 37 tokens on expert 2 span three 16-row blocks; the other four experts get no token
    indices = torch.full((37, 1), 2)
    indices, tensors = _problem(37, 24, 18, 5, 1, ("gate_up", "down"), torch.float32, indices)
    _check_experts(indices, tensors, "silu", torch.float32)


def test_experts_empty_experts_and_minus_one():
    # 11 experts (prime), tokens only on experts 0 and 3, and a token with no expert at all
    indices = torch.tensor([[0, 3], [3, -1], [-1, -1], [0, 3], [3, 0]])
    indices, tensors = _problem(5, 32, 16, 11, 2, ("gate_up",), torch.float32, indices)
    _check_experts(indices, tensors, "gpt_oss", torch.float32)


def test_experts_non_contiguous_inputs():
    indices, tensors = _problem(6, 32, 16, 3, 2, ("gate_up", "down"), torch.float32)
    # the same values behind transposed strides: x (T, H) from (H, T), biases from (N, E)
    strided = [None if t is None else t.transpose(0, -1).contiguous().transpose(0, -1)
               for t in tensors]
    assert not strided[0].is_contiguous() and not strided[4].is_contiguous()
    _check_experts(indices.t().contiguous().t(), strided, "gelu", torch.float32)


def test_experts_backward_is_deterministic():
    indices, tensors = _problem(20, 32, 16, 3, 2, ("gate_up", "down"), torch.float32)
    _, first = _run_experts(indices, tensors, "silu", "triton")
    _, second = _run_experts(indices, tensors, "silu", "triton")
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_moe_layer():
    """gptcore.moe end to end: router Linear, routing and experts, gradients to the router."""
    T, H, I, E = 6, 32, 16, 7
    x = torch.randn(T, H)
    params = [torch.randn(E, H), torch.randn(E, 2 * I, H) / H ** 0.5,
              torch.randn(E, H, I) / I ** 0.5]
    results = []
    for backend in ("triton", "ref"):
        leaves = [p.clone().requires_grad_() for p in (x, *params)]
        with gptcore.backend(backend), exact_fp32(enabled=backend == "ref"):
            y, aux = gptcore.moe(leaves[0], *leaves[1:], 2)
            y.sum().backward()
        results.append((y, aux["tokens_per_expert"], [t.grad for t in leaves]))
    (y, tpe, grads), (yr, tper, grads_r) = results
    assert torch.equal(tpe, tper)
    tol = tolerance(torch.float32, MOE_TOL)
    close("y", y, yr, tol)
    for name, g, gr in zip(("dx", "drouter", "dgate_up", "ddown"), grads, grads_r):
        close(name, g, gr, tol)


# ----------------------------------------------------------------------------- MXFP4

@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_experts_mxfp4(activation, dtype):
    T, H, I, E, top_k = 7, 64, 32, 3, 2
    indices, (x, w, gu, dn, gub, db) = _problem(T, H, I, E, top_k, ("gate_up", "down"), dtype)
    gu4, dn4 = gptcore.mxfp4_quantize(gu.float()), gptcore.mxfp4_quantize(dn.float())
    limit = gpt_oss_limit(dtype, LIMIT)
    with torch.no_grad(), gptcore.backend("triton"):
        y = gptcore.moe_experts(x, indices, w, gu4, dn4, activation=activation, gate_up_bias=gub,
                                down_bias=db, limit=limit)
    with exact_fp32():
        yr = ref.moe_experts(x.float(), indices, w.float(), gu4.dequantize(torch.float32),
                             dn4.dequantize(torch.float32), activation=activation,
                             gate_up_bias=gub.float(), down_bias=db.float(), limit=limit)
    # MXFP4 values are exact in fp32, TF32 and fp16, so only the activation dtype matters
    close("y", y, yr, tolerance(dtype, MOE_TOL))


# ----------------------------------------------------------------------------- op registration
