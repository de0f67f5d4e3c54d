"""The fp32 precision policy of the Triton kernels follows PyTorch's fp32 matmul setting: every
fp32 tl.dot of a launch runs "ieee" under torch's default ("highest") and TF32 under "high" or
"medium" (or torch.backends.cuda.matmul.allow_tf32); 16-bit operands keep Triton's default.
Checked on the interpreter by recording the input precision each tl.dot asks for, and by
running TF32 as the tensor cores do (tests/checks.py) to see that it is what the tolerances
of the Triton suites must allow for."""
import contextlib

import pytest
import torch

import gptcore
from checks import close_scaled, exact_fp32, interpreter_tf32

triton = pytest.importorskip("triton", reason="triton is not installed")
from triton._C.libtriton import ir  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

from gptcore.backends.triton.kernels import precision  # noqa: E402


@pytest.fixture
def torch_setting():
    """Restores torch's fp32 matmul settings after a test changes them."""
    saved = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved[1]
    torch.set_float32_matmul_precision(saved[0])


@pytest.mark.parametrize("setting,want", [("highest", "ieee"), ("high", "tf32"),
                                          ("medium", "tf32")])
def test_fp32_policy_follows_torch(torch_setting, setting, want):
    torch.set_float32_matmul_precision(setting)
    assert precision.dot_precision(torch.float32) == want
    for dtype in (torch.float16, torch.bfloat16):
        assert precision.dot_precision(dtype) == precision.DEFAULT


def test_allow_tf32_turns_tf32_on(torch_setting):
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = True
    assert precision.dot_precision(torch.float32) == "tf32"


@contextlib.contextmanager
def recorded_dots():
    """The input precision of every tl.dot the interpreter runs in the block, by operand type."""
    builder = interpreter.interpreter_builder
    plain = builder.create_dot
    seen = []

    def create_dot(a, b, d, input_precision, max_num_imprecise_acc):
        seen.append((str(a.dtype), input_precision))
        return plain(a, b, d, input_precision, max_num_imprecise_acc)

    builder.create_dot = create_dot
    try:
        yield seen
    finally:
        builder.create_dot = plain


def _attention_and_experts(dtype):
    """Forward and backward of attention (sinks, GQA, decode split) and of the MoE experts,
    on the Triton backend, in `dtype`."""
    torch.manual_seed(0)
    q = torch.randn(1, 4, 9, 16, dtype=dtype, requires_grad=True)
    k = torch.randn(1, 2, 21, 16, dtype=dtype, requires_grad=True)
    v = torch.randn(1, 2, 21, 16, dtype=dtype, requires_grad=True)
    sinks = torch.randn(4, dtype=dtype, requires_grad=True)
    x = torch.randn(6, 32, dtype=dtype, requires_grad=True)
    indices = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2], [1, 0], [2, 1]])
    weights = torch.rand(6, 2, dtype=dtype, requires_grad=True)
    gate_up = (torch.randn(3, 32, 32) / 6).to(dtype).requires_grad_()
    down = (torch.randn(3, 32, 16) / 4).to(dtype).requires_grad_()
    with gptcore.backend("triton"):
        out = gptcore.attention(q, k, v, causal=True, sinks=sinks)
        decode = gptcore.attention(q[:, :, :1].detach(), k.detach().repeat(1, 1, 20, 1),
                                   v.detach().repeat(1, 1, 20, 1), causal=True)
        y = gptcore.moe_experts(x, indices, weights, gate_up, down)
        (out.sum() + decode.sum() + y.sum()).backward()


@pytest.mark.parametrize("setting,want", [("highest", ir.INPUT_PRECISION.IEEE),
                                          ("high", ir.INPUT_PRECISION.TF32)])
def test_every_fp32_dot_follows_the_policy(torch_setting, setting, want):
    torch.set_float32_matmul_precision(setting)
    with recorded_dots() as seen:
        _attention_and_experts(torch.float32)
    assert len(seen) >= 20, seen                 # fwd, decode, bwd and three expert GEMMs ran
    assert {p for _, p in seen} == {want}, seen


def test_fp16_dots_keep_the_default(torch_setting):
    torch.set_float32_matmul_precision("highest")
    with recorded_dots() as seen:
        _attention_and_experts(torch.float16)
    assert seen and {p for _, p in seen} == {ir.INPUT_PRECISION.TF32}, seen


def test_tf32_errors_exceed_the_fp32_bound_and_meet_the_tf32_one():
    """Why the GPU suites need the policy-derived bounds: with TF32 products an fp32 attention
    misses the ieee bound of tests/test_attention_triton.py (2e-5) by far, and stays inside its
    TF32 bound."""
    from test_attention_triton import TOL
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 64) for _ in range(3))
    with exact_fp32():
        want = gptcore.ref.attention(q, k, v, causal=True)
    with gptcore.backend("triton"):
        with exact_fp32():              # "highest", also under GPTCORE_TEST_FP32_PRECISION=high
            exact = gptcore.attention(q, k, v, causal=True)
        with interpreter_tf32():
            tf32 = gptcore.attention(q, k, v, causal=True)
    close_scaled("ieee", exact, want, TOL["ieee"])
    close_scaled("tf32", tf32, want, TOL["tf32"])
    with pytest.raises(AssertionError):
        close_scaled("tf32 against the ieee bound", tf32, want, TOL["ieee"])
