"""MLP activations: gptcore.gelu (tanh and exact forms) and gptcore.gated_activation("swiglu")
forward and backward against the plain PyTorch compositions they replace (F.gelu; chunk + F.silu * up), on
the same inputs, interleaved. Memory-bound: GELU reads x and writes y, then reads dy, x and
writes dx (5 tensors of x's size); SwiGLU reads gate_up (2I) and writes y (I), then reads dy (I)
and gate_up (2I) and writes dgate_up (2I): 8 I-sized tensors per row."""
import torch
import torch.nn.functional as F

import gptcore
from harness import Row, main, time_interleaved

# (rows, width): nanoGPT's CPU recipe MLP (B12 x T64, 4 x 128), its GPU shape (B64 x T256,
# 4 x 384) and a Llama-like intermediate width at 2 x 512 tokens
SHAPES = {"quick": [(768, 512), (1024, 2816)], "full": [(768, 512), (16384, 1536), (1024, 11008)]}


def gelu_case(rows, width, dtype, approximate="tanh"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=g).to(dtype).requires_grad_()
    dy = torch.randn(rows, width, generator=g).to(dtype)

    def ours():
        gptcore.gelu(x, approximate=approximate).backward(dy)

    def peer():
        F.gelu(x, approximate=approximate).backward(dy)

    best = time_interleaved({"ours": ours, "peer": peer}, repeat=10)
    tag = "bf16" if dtype == torch.bfloat16 else "fp32"
    form = "tanh" if approximate == "tanh" else "exact"
    return Row("gelu", f"{form} fwd+bwd {rows}x{width} {tag}", best["ours"], best["peer"],
               "torch F.gelu", bytes=5 * x.numel() * x.element_size(), dtype=tag)


def swiglu_case(rows, width, dtype):
    g = torch.Generator().manual_seed(0)
    gate_up = torch.randn(rows, 2 * width, generator=g).to(dtype).requires_grad_()
    dy = torch.randn(rows, width, generator=g).to(dtype)

    def ours():
        gptcore.gated_activation(gate_up, "swiglu").backward(dy)

    def peer():
        gate, up = gate_up.chunk(2, dim=-1)
        (F.silu(gate) * up).backward(dy)

    best = time_interleaved({"ours": ours, "peer": peer}, repeat=10)
    tag = "bf16" if dtype == torch.bfloat16 else "fp32"
    return Row("gated_activation", f"swiglu fwd+bwd {rows}x{width} {tag}", best["ours"],
               best["peer"], "torch chunk+silu*up", bytes=8 * dy.numel() * dy.element_size(),
               dtype=tag)


def exact_gelu_case(rows, width, dtype):
    return gelu_case(rows, width, dtype, approximate="none")


def run(quick=False):
    return [case(rows, width, dtype) for rows, width in SHAPES["quick" if quick else "full"]
            for dtype in (torch.float32, torch.bfloat16)
            for case in (gelu_case, exact_gelu_case, swiglu_case)]


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
