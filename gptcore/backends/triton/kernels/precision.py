"""Which precision fp32 `tl.dot` uses, following PyTorch's own switch for fp32 matmuls:
`torch.get_float32_matmul_precision()` "highest" (the default) keeps full fp32 products
("ieee": FMA, no tensor cores); "high" or "medium" (also what `torch.backends.cuda.matmul.
allow_tf32 = True` sets) allow TF32 tensor cores (operands rounded to 10 mantissa bits, about
1e-3 relative). The launchers pass the result as the DOT_PRECISION constexpr of every kernel
with a tl.dot; fp16 and bf16 operands get Triton's default, which they ignore.
"""
import torch

# Triton's default input precision: a no-op for 16-bit operands, TF32 for fp32 ones.
DEFAULT = "tf32"


def fp32_dot_precision():
    """"ieee" or "tf32": what PyTorch allows for fp32 matmuls right now."""
    if torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def dot_precision(dtype):
    """DOT_PRECISION for tl.dot operands of `dtype` (a torch dtype)."""
    return fp32_dot_precision() if dtype == torch.float32 else DEFAULT
