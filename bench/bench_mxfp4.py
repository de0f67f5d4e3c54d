"""MXFP4 dequantisation: gptcore's C++ kernel against what a user writes in plain PyTorch (a
16-entry table of e2m1 values indexed by both nibbles, times the block's power-of-two scale),
checked equal first, their runs interleaved.

Napkin math: each output fp32 value reads 0.53 bytes (half a byte + 1/32 scale byte) and
writes 4, so the kernel is bound by writing its output; GB/s counts the bytes written."""
import torch

import gptcore
from harness import Row, main, time_interleaved

# e2m1 codes 0..15: sign bit 3, then 0, 0.5, 1, 1.5, 2, 3, 4, 6
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])

SHAPES = {"quick": [(8, 1024, 1024)], "full": [(8, 1024, 1024), (32, 2048, 1024)]}


def cases(quick):
    for shape in SHAPES["quick" if quick else "full"]:
        w4 = gptcore.mxfp4_quantize(torch.randn(shape))
        yield f"dequantize {'x'.join(map(str, shape))} fp32", w4


def torch_dequantize(blocks, scales):
    """blocks (..., K/2) uint8, scales (..., K/32) uint8 -> (..., K) fp32 in plain PyTorch."""
    codes = torch.stack((blocks & 0xF, blocks >> 4), dim=-1).flatten(-2)  # (..., K): even low
    values = E2M1[codes.long()].unflatten(-1, (-1, 32))                   # (..., K/32, 32)
    return (values * torch.exp2(scales.float() - 127)[..., None]).flatten(-2)


def run(quick=False):
    rows = []
    for case, w4 in cases(quick):
        def ours():
            return gptcore.mxfp4_dequantize(w4, torch.float32)

        def peer():
            return torch_dequantize(w4.blocks, w4.scales)
        torch.testing.assert_close(ours(), peer(), rtol=0, atol=0)      # exact: same values
        best = time_interleaved({"gptcore": ours, "torch": peer})
        rows.append(Row("mxfp4", case, best["gptcore"], best["torch"], "plain pytorch",
                        bytes=w4.shape.numel() * 4))
    return rows


def test_mxfp4_dequantize(benchmark):
    _, w4 = next(cases(quick=True))
    benchmark(gptcore.mxfp4_dequantize, w4, torch.float32)


if __name__ == "__main__":
    main(run, __doc__)
