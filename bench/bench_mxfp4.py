"""MXFP4 dequantisation: gptcore's C++ kernel against plain PyTorch (the reference's ops).

Napkin math: each output fp32 value reads 0.53 bytes (half a byte + 1/32 scale byte) and
writes 4, so the kernel is bound by writing its output; GB/s counts the bytes written."""
import torch

import gptcore
from gptcore import ref
from harness import Row, main, time_fn

SHAPES = {"quick": [(8, 1024, 1024)], "full": [(8, 1024, 1024), (32, 2048, 1024)]}


def cases(quick):
    for shape in SHAPES["quick" if quick else "full"]:
        w4 = gptcore.mxfp4_quantize(torch.randn(shape))
        yield f"dequantize {'x'.join(map(str, shape))} fp32", w4


def run(quick=False):
    rows = []
    for case, w4 in cases(quick):
        ours = time_fn(lambda: gptcore.mxfp4_dequantize(w4, torch.float32))
        peer = time_fn(lambda: ref.mxfp4_dequantize(w4.blocks, w4.scales, torch.float32))
        n = w4.shape.numel()
        rows.append(Row("mxfp4", case, ours, peer, "plain pytorch", bytes=n * 4))
    return rows


def test_mxfp4_dequantize(benchmark):
    _, w4 = next(cases(quick=True))
    benchmark(gptcore.mxfp4_dequantize, w4, torch.float32)


if __name__ == "__main__":
    main(run, __doc__)
