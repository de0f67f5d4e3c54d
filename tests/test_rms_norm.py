"""gptcore.rms_norm (with and without the fused residual add and the gain) on every backend:
the C++ kernels at every ISA level this CPU has, the Triton kernels under the interpreter and the
reference, outputs and gradients against gptcore.ref over odd shapes (dim 1, rows 0); ref
against a per-row loop and gradcheck in fp64."""
import pytest
import torch

import gptcore
from checks import close_scaled
from gptcore import ref

SHAPES = [(0, 8), (1, 1), (3, 17), (2, 5, 64), (7, 1000)]
# fp32: one row's sum of squares in another order (SIMD lanes, blocks): a few ulps of O(1)
# values. 16-bit outputs: one rounding of the output, 2^-8 (bf16) / 2^-11 (fp16) relative.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def _inputs(shape, dtype, residual, weight, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g).to(dtype)
    r = torch.randn(*shape, generator=g).to(dtype) if residual else None
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g)).to(dtype) if weight else None
    return x, r, w


def _run(x, r, w, eps=1e-5):
    """Outputs and gradients of x, residual, weight through sin/cos of y and h (every term)."""
    leaves = [None if t is None else t.clone().requires_grad_() for t in (x, r, w)]
    out = gptcore.rms_norm(leaves[0], leaves[2], eps, residual=leaves[1])
    y, h = out if r is not None else (out, None)
    loss = y.float().sin().sum() + (h.float().cos().sum() if h is not None else 0)
    if y.numel():
        loss.backward()
    grads = [None if t is None else t.grad for t in leaves]
    return [y, h, *grads]


def _compare(backend, shape, dtype, residual, weight):
    x, r, w = _inputs(shape, dtype, residual, weight)
    with gptcore.backend(backend):
        got = _run(x, r, w)
    with gptcore.backend("ref"):
        want = _run(x, r, w)
    for name, a, b in zip(("y", "h", "dx", "dresidual", "dweight"), got, want):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype)
        # weight gradients sum over rows: the tolerance grows with their number
        rows = max(1, x.numel() // x.shape[-1]) if name == "dweight" else 1
        close_scaled(name, a, b, TOL[dtype] * rows ** 0.5)


@pytest.mark.parametrize("residual,weight", [(True, True), (False, True), (True, False),
                                             (False, False)], ids=["res+w", "w", "res", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpp_matches_ref(isa, dtype, shape, residual, weight):
    _compare("cpp", shape, dtype, residual, weight)


# The interpreter computes bf16 arithmetic wrongly (triton issue 11584): fp32 and fp16.
@pytest.mark.parametrize("residual,weight", [(True, True), (False, False)], ids=["res+w", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_triton_matches_ref(dtype, shape, residual, weight):
    _compare("triton", shape, dtype, residual, weight)


def test_ref_matches_a_row_loop():
    x, r, w = _inputs((4, 9), torch.float64, True, True)
    y, h = ref.rms_norm(x, w, 1e-5, r)
    for i in range(4):
        row = x[i] + r[i]
        ms = sum(v * v for v in row.tolist()) / 9
        want = [v / (ms + 1e-5) ** 0.5 * float(w[j]) for j, v in enumerate(row.tolist())]
        assert torch.allclose(y[i], torch.tensor(want, dtype=torch.float64), atol=1e-12)
        assert torch.equal(h[i], row)


def test_ref_gradcheck():
    x, r, w = (t.requires_grad_() for t in _inputs((3, 6), torch.float64, True, True))
    assert torch.autograd.gradcheck(lambda a, b, c: ref.rms_norm(a, c, 1e-5, b), (x, r, w))


def test_cpp_is_deterministic_and_thread_count_free():
    x, r, w = _inputs((300, 96), torch.float32, True, True)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            with gptcore.backend("cpp"):
                results.append(_run(x, r, w))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: gptcore.rms_norm(x.int(), None), TypeError, r"x: expected dtype"),
    (lambda x: gptcore.rms_norm(x, torch.ones(3)), ValueError, r"weight: expected shape \(8,\)"),
    (lambda x: gptcore.rms_norm(x, None, residual=x[:, :4]), ValueError, r"residual: expected shape"),
    (lambda x: gptcore.rms_norm(x, None, eps=0.0), ValueError, r"eps: expected a finite number > 0"),
    (lambda x: gptcore.rms_norm(x, None, residual=x.half()), TypeError, r"x/residual: expected one dtype"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(2, 8))
