"""MoE routing at every ISA level (the AVX-512 row passes and the portable loops) against
gptcore.ref: every scoring mode, expert counts around the 16-lane vector (E = 1 .. 64 with
tails of every kind), k up to E, exact ties, -inf and huge logits, logits whose probabilities
are subnormal or 0, rows of NaN scores, and no tokens at all. Selection must equal the
reference exactly (AVX-512 selection rounds from 16 experts, scalar insertion below)."""
import pytest
import torch

import gptcore
from gptcore import ref

_C = pytest.importorskip("gptcore._C", reason="the C++ extension is not built")
ops = torch.ops.gptcore
assert gptcore.available_backends()["cpp"]

MODES = [("softmax", True, False), ("softmax", False, False), ("topk_softmax", True, False),
         ("sigmoid", True, False), ("sigmoid", False, False), ("sigmoid", True, True),
         ("sigmoid", False, True)]
EXPERTS = [1, 2, 7, 15, 16, 17, 33, 64]


def _logits(E, seed):
    """29 random rows, then rows that stress the exponentials and the tie order."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(29, E, generator=g) * 3]
    tied = torch.randn(E, generator=g)
    tied[: (E + 1) // 2] = 0.25                                   # exact ties: lower expert first
    rows.append(tied[None])
    rows.append(torch.full((1, E), 1.5))                          # every expert tied
    # -inf (the whole row at E=1: NaN weights, as torch's) and 1e30 (every other exp is 0)
    mixed = torch.randn(E, generator=g)
    mixed[::3] = -float("inf")
    if E > 1:
        mixed[1] = 1e30
    rows.append(mixed[None])
    huge = torch.randn(E, generator=g)
    huge[::2] = -1e30
    rows.append(huge[None])
    # exp(x - max) subnormal (-90 .. -100), 0 (-110), sigmoid 0 below -88.72 (-89, -95) and
    # subnormal at -88: the ranking of these must match torch's values too.
    tail = torch.tensor([0.0, -88.0, -89.0, -90.0, -95.0, -100.0, -110.0, -1e30])
    rows.append(tail.repeat((E + 7) // 8)[:E].flip(0)[None])
    rows.append(torch.full((1, E), -float("inf")))               # NaN scores: the scalar fallback
    return torch.cat(rows)


def _ks(E):
    return sorted({1, 2, 3, E // 2, E - 1, E} & set(range(1, E + 1)))


def _bias(E, with_bias, seed):
    return torch.randn(E, generator=torch.Generator().manual_seed(seed)) / 4 if with_bias else None


@pytest.mark.parametrize("E", EXPERTS)
@pytest.mark.parametrize("scoring,renormalize,with_bias", MODES)
def test_route_forward(isa, scoring, renormalize, with_bias, E):
    logits = _logits(E, E)
    bias = _bias(E, with_bias, E + 1)
    for k in _ks(E):
        w, idx = ops.route(logits, k, scoring, renormalize, bias)
        w_ref, idx_ref = ref.route(logits, k, scoring=scoring, renormalize=renormalize, bias=bias)
        assert torch.equal(idx, idx_ref), f"k={k}: selection differs from the stable sort"
        # exp within 2 ulp of torch's and a different summation order: a few fp32 ulps of
        # weights in [0, 1]
        assert torch.allclose(w, w_ref, atol=1e-6, rtol=1e-5, equal_nan=True), \
            f"k={k}: {(w - w_ref).abs().max()}"


@pytest.mark.parametrize("E", EXPERTS)
@pytest.mark.parametrize("scoring,renormalize,with_bias", MODES)
def test_route_backward(isa, scoring, renormalize, with_bias, E):
    # without the all -inf row: there the reference's softmax backward spreads NaN over every
    # expert, ours (every ISA level) only over the chosen ones
    logits = _logits(E, 100 + E)[:-1]
    bias = _bias(E, with_bias, E + 2)
    for k in _ks(E):
        dw = torch.randn(logits.shape[0], k, generator=torch.Generator().manual_seed(k))
        grads = []
        for backend in ("cpp", "ref"):
            leaf = logits.clone().requires_grad_()
            with gptcore.backend(backend):
                w, _ = gptcore.route(leaf, k, scoring=scoring, renormalize=renormalize, bias=bias)
                grads.append(torch.autograd.grad(w, leaf, dw)[0])
        # products and sums of O(1) gradients with the weights' few-ulp differences
        assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-5, equal_nan=True), \
            f"k={k}: {(grads[0] - grads[1]).abs().max()}"


@pytest.mark.parametrize("scoring,renormalize,with_bias", MODES)
def test_route_no_tokens(isa, scoring, renormalize, with_bias):
    logits = torch.empty(0, 17, requires_grad=True)
    bias = _bias(17, with_bias, 3)
    w, idx = gptcore.route(logits, 4, scoring=scoring, renormalize=renormalize, bias=bias)
    assert w.shape == (0, 4) and idx.shape == (0, 4) and idx.dtype == torch.int64
    (grad,) = torch.autograd.grad(w, logits, torch.empty(0, 4))
    assert grad.shape == (0, 17)


def test_build_info_names_the_routing_path(isa):
    path = _C.build_info()["paths"]["route"]
    assert ("AVX-512" in path) == (isa in ("avx512", "avx512_bf16")), path
