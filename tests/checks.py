"""Comparison helpers shared by the Triton tests: the scaled closeness check, the bound that
applies to a result under the fp32 precision policy in force, and TF32 for the interpreter."""
import contextlib
import os

import numpy as np
import torch

ON_GPU = os.environ.get("GPTCORE_TEST_DEVICE") == "cuda"
_interpreter_tf32 = False


def close_scaled(name, got, want, tol):
    """|got - want| <= tol * max(1, max|want|); the failure message prints the max difference."""
    got, want = got.float(), want.float()
    err = (got - want).abs().max().item() if want.numel() else 0.0
    bound = tol * max(want.abs().max().item() if want.numel() else 0.0, 1.0)
    assert err <= bound, f"{name}: max |diff| {err:.3g} > {bound:.3g}"


def fp32_products():
    """How this run multiplies fp32 tl.dot operands: "tf32" where torch allows TF32 for fp32
    matmuls (torch.get_float32_matmul_precision() "high"/"medium", or
    torch.backends.cuda.matmul.allow_tf32) and the kernels really run TF32 (on a GPU, or on the
    interpreter inside `interpreter_tf32()`); "ieee" otherwise: the interpreter multiplies in
    fp32 whatever the setting. Read from torch here, not from the kernels' policy under test."""
    allowed = (torch.get_float32_matmul_precision() != "highest"
               or torch.backends.cuda.matmul.allow_tf32)
    return "tf32" if allowed and (ON_GPU or _interpreter_tf32) else "ieee"


def tolerance(dtype, bounds):
    """A suite's bound for a result computed from `dtype` operands. `bounds` holds the suite's
    measured bounds (each explained where it is defined) by how the products are formed:
    "ieee" (fp32 products: only the order of the sums differs from the reference; on a GPU
    also exp2/sigmoid's approximate instructions, a few ulp, far below any of these bounds),
    "tf32" (fp32 operands whose 13 low mantissa bits the tensor cores drop), "fp16"."""
    if dtype == torch.float32:
        return bounds[fp32_products()]
    return bounds["fp16"]


def _truncate_to_tf32(values):
    """fp32 -> TF32 as the tensor cores read it: Triton passes fp32 bits to the tf32 MMA with
    no rounding instruction (no cvt.rna in the sm80/sm90 PTX of our kernels), and the MMA
    ignores the 13 low mantissa bits, so the value is truncated toward zero."""
    if values.dtype != np.float32:
        return values
    return (values.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


@contextlib.contextmanager
def interpreter_tf32():
    """Runs the block as a GPU would under torch.set_float32_matmul_precision("high"): the
    kernels get DOT_PRECISION="tf32" from the policy, and the interpreter (which ignores
    input_precision) truncates fp32 dot operands to TF32 when a dot asks for it."""
    global _interpreter_tf32
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    plain = builder.create_dot

    def create_dot(a, b, d, input_precision, max_num_imprecise_acc):
        if input_precision == ir.INPUT_PRECISION.TF32:
            a = interpreter.TensorHandle(_truncate_to_tf32(a.data), a.dtype)
            b = interpreter.TensorHandle(_truncate_to_tf32(b.data), b.dtype)
        return plain(a, b, d, input_precision, max_num_imprecise_acc)

    saved = torch.get_float32_matmul_precision(), _interpreter_tf32
    torch.set_float32_matmul_precision("high")
    builder.create_dot = create_dot
    _interpreter_tf32 = True
    try:
        yield
    finally:
        _interpreter_tf32 = saved[1]                   # nested inside a session-wide one
        builder.create_dot = plain
        torch.set_float32_matmul_precision(saved[0])


@contextlib.contextmanager
def exact_fp32(enabled=True):
    """torch's own fp32 matmuls in full fp32 inside the block: the reference must not take TF32
    from the precision setting a run puts in force for the kernels under test (on a GPU, cuBLAS
    follows it too)."""
    saved = torch.get_float32_matmul_precision()
    if enabled:
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def gpt_oss_limit(dtype, tight):
    """The gpt_oss clamp limit a test may use: `tight` (small enough that the clamps cut random
    pre-activations), except for fp32 under TF32, whose products move pre-activations by about
    1e-3, enough to carry one across the clamp edge, where the gradient jumps by O(1) and no
    rounding bound holds. There the default limit, 7.0, far above the tests' pre-activations
    (standard deviation <= 1.5), keeps the edge out of reach; the ieee run covers the clamps."""
    if dtype == torch.float32 and fp32_products() == "tf32":
        return 7.0
    return tight
