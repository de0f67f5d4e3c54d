"""gptcore.rotary (rotate-half and interleaved, shared and per-batch tables, strided inputs) on
every backend: the C++ kernels at every ISA level this CPU has, the Triton kernel under the
interpreter and the reference, outputs and gradients against gptcore.ref over odd shapes
(zero sizes, D = 2, Hk = 0, rows not a multiple of any vector width); ref against a per-element
loop and gradcheck in fp64; the angles from positions by complex multiplication."""
import math

import pytest
import torch

import gptcore
from checks import close_scaled
from gptcore import ref

# (B, S, Hq, Hk, D)
SHAPES = [(0, 3, 2, 1, 8), (2, 0, 2, 1, 8), (1, 3, 2, 0, 8), (1, 1, 1, 1, 2), (2, 5, 3, 1, 6),
          (1, 7, 4, 2, 34), (3, 4, 2, 2, 128)]
# Each output element is x c + x' s: two products and one add in fp32, rounded once more (or
# fused) in another order: a few ulps of O(1) values. 16-bit: one rounding of the output.
TOL = {torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def _tables(B, S, D, per_batch, g):
    """cos, sin (B or 1, S, D) of random angles in the rotate-half layout (halves equal)."""
    angles = torch.rand(B if per_batch else 1, S, D // 2, generator=g) * 50
    return angles.cos().repeat(1, 1, 2), angles.sin().repeat(1, 1, 2)


def _inputs(shape, dtype, layout, per_batch, seed=0):
    B, S, Hq, Hk, D = shape
    g = torch.Generator().manual_seed(seed)
    if layout == "fused":        # q and k as views of one projection's output (B, S, (Hq+Hk) D)
        qk = torch.randn(B, S, (Hq + Hk) * D, generator=g).to(dtype)
        q, k = qk.split((Hq * D, Hk * D), dim=-1)
        q, k = q.view(B, S, Hq, D), k.view(B, S, Hk, D)
    elif layout == "bhsd":       # (B, H, S, D) tensors seen as (B, S, H, D)
        q = torch.randn(B, Hq, S, D, generator=g).to(dtype).transpose(1, 2)
        k = torch.randn(B, Hk, S, D, generator=g).to(dtype).transpose(1, 2)
    else:
        q, k = (torch.randn(B, S, H, D, generator=g).to(dtype) for H in (Hq, Hk))
    cos, sin = _tables(B, S, D, per_batch, g)
    return q, k, cos, sin


def _run(q, k, cos, sin, interleaved):
    """Outputs and the gradients of q and k through sin/cos of the outputs (every element)."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k)]
    yq, yk = gptcore.rotary(leaves[0], leaves[1], cos=cos, sin=sin,
                            style="interleaved" if interleaved else "half")
    loss = yq.float().sin().sum() + yk.float().cos().sum()
    if yq.numel() or yk.numel():
        loss.backward()
    return [yq, yk] + [t.grad for t in leaves]


def _compare(backend, shape, dtype, layout="plain", per_batch=False, interleaved=False):
    q, k, cos, sin = _inputs(shape, dtype, layout, per_batch)
    with gptcore.backend(backend):
        got = _run(q, k, cos, sin, interleaved)
    with gptcore.backend("ref"):
        want = _run(q, k, cos, sin, interleaved)
    for name, a, b in zip(("q", "k", "dq", "dk"), got, want):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape)
        close_scaled(name, a, b, TOL[dtype])


@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpp_matches_ref(isa, dtype, shape, interleaved):
    _compare("cpp", shape, dtype, interleaved=interleaved)


@pytest.mark.parametrize("layout", ["fused", "bhsd"])
@pytest.mark.parametrize("per_batch", [False, True], ids=["shared", "per_batch"])
@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
def test_cpp_reads_strided_inputs(isa, layout, per_batch, interleaved):
    _compare("cpp", (2, 5, 3, 1, 10), torch.float32, layout, per_batch, interleaved)


# The interpreter computes bf16 arithmetic wrongly (triton issue 11584): fp32 and fp16.
@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[3:6], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_triton_matches_ref(dtype, shape, interleaved):
    _compare("triton", shape, dtype, interleaved=interleaved)


@pytest.mark.parametrize("layout", ["fused", "bhsd"])
def test_triton_reads_strided_inputs(layout):
    _compare("triton", (2, 5, 3, 1, 10), torch.float32, layout, per_batch=True)


@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
def test_ref_matches_an_element_loop(interleaved):
    q, k, cos, sin = _inputs((2, 3, 2, 1, 6), torch.float64, "plain", per_batch=True)
    cos, sin = torch.randn_like(cos).double(), torch.randn_like(sin).double()  # any values
    got = ref.rotary(q, k, cos, sin, interleaved)
    for x, y in zip((q, k), got):
        B, S, H, D = x.shape
        for b in range(B):
            for s in range(S):
                for h in range(H):
                    for i in range(D):
                        if interleaved:
                            j, sign = (i + 1, -1) if i % 2 == 0 else (i - 1, 1)
                        else:
                            j, sign = (i + D // 2, -1) if i < D // 2 else (i - D // 2, 1)
                        want = x[b, s, h, i] * cos[b, s, i] + sign * x[b, s, h, j] * sin[b, s, i]
                        assert math.isclose(float(y[b, s, h, i]), float(want), abs_tol=1e-12)


@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
def test_ref_gradcheck(interleaved):
    q, k, cos, sin = _inputs((2, 3, 2, 1, 6), torch.float64, "plain", per_batch=True)
    cos, sin = torch.randn_like(cos).double(), torch.randn_like(sin).double()
    leaves = (q.requires_grad_(), k.requires_grad_(), cos.requires_grad_(), sin.requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: ref.rotary(*t, interleaved), leaves)


@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_backward_is_the_adjoint_for_any_tables(backend, interleaved):
    """Tables whose halves differ (no rotation at all): the backward still matches autograd
    through the reference, so it takes each partner's sine, not its own."""
    q, k, cos, sin = _inputs((1, 4, 2, 2, 8), torch.float32, "plain", per_batch=False)
    cos, sin = torch.randn_like(cos), torch.randn_like(sin)
    with gptcore.backend(backend):
        got = _run(q, k, cos, sin, interleaved)
    with gptcore.backend("ref"):
        want = _run(q, k, cos, sin, interleaved)
    for name, a, b in zip(("q", "k", "dq", "dk"), got, want):
        close_scaled(name, a, b, TOL[torch.float32])


def test_tables_that_need_gradients_get_them():
    q, k, cos, sin = _inputs((1, 3, 2, 1, 4), torch.float32, "plain", per_batch=False)
    cos.requires_grad_()
    with gptcore.backend("cpp"):
        yq, yk = gptcore.rotary(q, k, cos=cos, sin=sin)
    (yq.sum() + yk.sum()).backward()
    want = q.sum(2) + k.sum(2)                                        # d/dcos of sum(x * cos)
    assert torch.allclose(cos.grad, want, atol=1e-5)


def test_cpp_is_thread_count_free():
    q, k, cos, sin = _inputs((4, 64, 8, 2, 64), torch.float32, "fused", per_batch=False)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with gptcore.backend("cpp"):
                results.append(_run(q, k, cos, sin, False))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("call,error,match", [
    (lambda q, k, c, s: gptcore.rotary(q.int(), k, cos=c, sin=s), TypeError, r"q: expected dtype"),
    (lambda q, k, c, s: gptcore.rotary(q, k.half(), cos=c, sin=s), TypeError,
     r"q/k: expected one dtype"),
    (lambda q, k, c, s: gptcore.rotary(q, k[:, :2], cos=c, sin=s), ValueError,
     r"k: expected shape \(2, 3, Hk, 8\)"),
    (lambda q, k, c, s: gptcore.rotary(q[..., :7], k[..., :7], cos=c[:, :7], sin=s[:, :7]),
     ValueError, r"q: expected an even head dim D"),
    (lambda q, k, c, s: gptcore.rotary(q, k, cos=c[:2], sin=s[:2]), ValueError,
     r"cos: expected shape \(1 or 2, 3, 8\)"),
    (lambda q, k, c, s: gptcore.rotary(q[0], k[0], cos=c, sin=s), ValueError,
     r"q: expected a 4-D tensor"),
    (lambda q, k, c, s: gptcore.rotary(q, k, cos=c, sin=s.int()), TypeError, r"sin: expected dtype"),
    (lambda q, k, c, s: gptcore.rotary(q, k, cos=c), ValueError, r"positions, cos/sin: expected"),
    (lambda q, k, c, s: gptcore.rotary(q, k, torch.arange(3), cos=c, sin=s), ValueError,
     r"positions, cos/sin: expected"),
    (lambda q, k, c, s: gptcore.rotary(q, k, torch.arange(3.0)), TypeError,
     r"positions: expected an integer tensor"),
    (lambda q, k, c, s: gptcore.rotary(q, k, torch.arange(3), theta=0), ValueError, r"theta:"),
    (lambda q, k, c, s: gptcore.rotary(q, k, torch.arange(3), style="neox"), ValueError,
     r"style: expected one of"),
    (lambda q, k, c, s: gptcore.rotary(q, k, torch.arange(4)), ValueError,
     r"cos: expected shape \(1 or 2, 3, 8\), got \(1, 4, 8\)"),
])
def test_bad_input(call, error, match):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 4, 8, generator=g), torch.randn(2, 3, 2, 8, generator=g)
    with pytest.raises(error, match=match):
        call(q, k, torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g))


@pytest.mark.parametrize("style", ["half", "interleaved"])
def test_positions_give_the_rotation_by_each_pairs_angle(style):
    """From positions and theta: each pair (x_a, x_b) turns by p * theta^(-2i/D), checked by
    complex multiplication, per position and per batch row."""
    B, S, D, theta = 2, 5, 6, 500.0
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, S, 3, D, generator=g), torch.randn(B, S, 1, D, generator=g)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 9, 11, 40, 41]])
    yq, _ = gptcore.rotary(q, k, positions, theta, style=style)
    pairs = [(2 * i, 2 * i + 1) for i in range(D // 2)] if style == "interleaved" else \
        [(i, i + D // 2) for i in range(D // 2)]
    for i, (a, b) in enumerate(pairs):
        angle = positions[:, :, None].double() * theta ** (-2 * i / D)      # (B, S, 1)
        want = torch.complex(q[..., a].double(), q[..., b].double()) * torch.polar(
            torch.ones_like(angle), angle)
        assert torch.allclose(yq[..., a].double(), want.real, atol=1e-4)   # fp32 angles of ~40 rad
        assert torch.allclose(yq[..., b].double(), want.imag, atol=1e-4)
