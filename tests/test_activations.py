"""gptcore.gelu (exact and tanh) and gptcore.gated_activation (SwiGLU, GeGLU) on every backend:
the C++ kernels at every ISA level this CPU has, the Triton kernels under the interpreter and the
reference, outputs and gradients against gptcore.ref over odd shapes (width 1, zero rows); ref
against per-element math and gradcheck in fp64."""
import math

import pytest
import torch

import gptcore
from checks import close_scaled
from gptcore import ref

SHAPES = [(0, 8), (1, 2), (3, 34), (2, 5, 64), (7, 1000)]     # last dim even: gated halves
# fp32: the reference (torch's fp32 GELU) is itself up to 1e-6 off fp64 values, the C++ kernels'
# exp/erf polynomials (|erf error| <= 1.5e-7, exp < 1 ulp) 5e-7 (measured), and gradients carry
# a factor dy of up to 4: 5e-6. 16-bit outputs: one rounding of the output (and, for backward,
# of the input gradient): 2^-8 (bf16), 2^-11 (fp16).
TOL = {torch.float32: 5e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def _input(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(*shape, generator=g)).to(dtype)     # +-9: both tails of the curves


def _run(fn, x):
    """fn(x) and dx through a fixed random weighting of the output (every element's gradient)."""
    leaf = x.clone().requires_grad_()
    y = fn(leaf)
    g = torch.Generator().manual_seed(1)
    if y.numel():
        (y.float() * torch.randn(y.shape, generator=g)).sum().backward()
    return y, leaf.grad


def _compare(backend, fn, x):
    with gptcore.backend(backend):
        got = _run(fn, x)
    with gptcore.backend("ref"):
        want = _run(fn, x)
    for name, a, b in zip(("y", "dx"), got, want):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype)
        close_scaled(name, a, b, TOL[x.dtype])


OPS = {"gelu": lambda x: gptcore.gelu(x), "gelu_tanh": lambda x: gptcore.gelu(x, "tanh"),
       "swiglu": lambda x: gptcore.gated_activation(x, "swiglu"),
       "geglu": lambda x: gptcore.gated_activation(x, "geglu")}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpp_matches_ref(isa, dtype, shape, op):
    _compare("cpp", OPS[op], _input(shape, dtype))


# The interpreter computes bf16 arithmetic wrongly (triton issue 11584): fp32 and fp16.
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_triton_matches_ref(dtype, shape, op):
    _compare("triton", OPS[op], _input(shape, dtype))


def test_cpp_takes_any_strides(isa):
    x = _input((6, 40), torch.float32)
    view = x[:, ::2]                                            # (6, 20), column stride 2
    _compare("cpp", OPS["gelu_tanh"], view)
    _compare("cpp", OPS["swiglu"], x.t())                        # (40, 6), transposed


def _phi(v):
    return 0.5 * (1 + math.erf(v / math.sqrt(2)))


def test_ref_matches_per_element_math():
    x = _input((4, 6), torch.float64)
    I = 3
    for i in range(4):
        for j in range(6):
            v = float(x[i, j])
            tanh_form = 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
            assert abs(float(ref.gelu(x, "none")[i, j]) - v * _phi(v)) < 1e-12
            assert abs(float(ref.gelu(x, "tanh")[i, j]) - tanh_form) < 1e-12
        for j in range(I):
            gate, up = float(x[i, j]), float(x[i, I + j])
            silu = gate / (1 + math.exp(-gate))
            assert abs(float(ref.gated_activation(x, "swiglu")[i, j]) - silu * up) < 1e-12
            geglu = float(ref.gelu(x[i, j:j + 1], "tanh")) * up
            assert abs(float(ref.gated_activation(x, "geglu")[i, j]) - geglu) < 1e-12


@pytest.mark.parametrize("op", OPS)
def test_ref_gradcheck(op):
    x = _input((3, 6), torch.float64).requires_grad_()
    fns = {"gelu": lambda t: ref.gelu(t), "gelu_tanh": lambda t: ref.gelu(t, "tanh"),
           "swiglu": lambda t: ref.gated_activation(t, "swiglu"),
           "geglu": lambda t: ref.gated_activation(t, "geglu")}
    assert torch.autograd.gradcheck(fns[op], (x,))


def test_cpp_is_thread_count_free():
    x = _input((300, 512), torch.float32)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with gptcore.backend("cpp"):
                results.append(_run(OPS["swiglu"], x) + _run(OPS["gelu"], x))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: gptcore.gelu(x.int()), TypeError, r"x: expected dtype"),
    (lambda x: gptcore.gelu(x, "fast"), ValueError, r"approximate: expected one of"),
    (lambda x: gptcore.gated_activation(x, "relu"), ValueError, r"kind: expected one of"),
    (lambda x: gptcore.gated_activation(x[:, :3], "swiglu"), ValueError,
     r"gate_up: expected a last dim of even size"),
    (lambda x: gptcore.gated_activation(x.int(), "swiglu"), TypeError, r"gate_up: expected dtype"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(2, 8))
