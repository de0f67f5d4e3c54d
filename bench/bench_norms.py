"""Norms: gptcore.rms_norm with the residual add fused in (forward and backward) against the
plain PyTorch composition it replaces (x + residual, then F.rms_norm), on the same inputs,
interleaved. Memory-bound: forward reads x, residual and writes y, h; backward reads dy, dh, h
and writes dx, so 8 tensors of the input's size move per call (weight and rstd are small)."""
import torch
import torch.nn.functional as F

import gptcore
from harness import Row, main, time_interleaved

# (rows, dim): nanoGPT's shakespeare_char CPU recipe (B12 x T64, width 128), its GPU shape
# (B64 x T256, width 384) and a Llama-like width at 2 x 512 tokens
SHAPES = {"quick": [(768, 128), (2048, 1024)], "full": [(768, 128), (16384, 384), (1024, 4096)]}


def case(rows, dim, dtype):
    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(rows, dim, generator=g).to(dtype).requires_grad_() for _ in range(2))
    w = torch.ones(dim, dtype=dtype, requires_grad=True)
    dy = torch.randn(rows, dim, generator=g).to(dtype)

    def ours():
        y, h = gptcore.rms_norm(x, w, 1e-5, residual=r)
        torch.autograd.backward([y, h], [dy, dy])

    def peer():
        h = x + r
        y = F.rms_norm(h, (dim,), w, 1e-5)
        torch.autograd.backward([y, h], [dy, dy])

    best = time_interleaved({"ours": ours, "peer": peer}, repeat=10)
    tag = "bf16" if dtype == torch.bfloat16 else "fp32"
    return Row("rms_norm", f"fwd+bwd +residual {rows}x{dim} {tag}", best["ours"], best["peer"],
               "torch add+rms_norm", bytes=8 * x.numel() * x.element_size(), dtype=tag)


def run(quick=False):
    return [case(rows, dim, dtype) for rows, dim in SHAPES["quick" if quick else "full"]
            for dtype in (torch.float32, torch.bfloat16)]


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
