"""The C++ MXFP4 kernels against gptcore.ref: bit-exact codes and scales, exact dequantisation."""
import pytest
import torch

import gptcore
from gptcore import ref


def _weights(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * torch.logspace(-3, 3, shape[-1] // 32).repeat_interleave(32)
    w[..., :32] = 0.0                                          # an all-zero block
    if shape[-1] >= 64:                                        # a block of e2m1 ties (scale 1)
        w[..., 32:64] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4)
    return w


@pytest.mark.parametrize("shape", [(32,), (3, 64), (2, 5, 96), (7, 1024)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_matches_ref_bit_for_bit(shape, dtype, isa):
    w = _weights(shape).to(dtype)
    with gptcore.backend("cpp"):
        w4 = gptcore.mxfp4_quantize(w)
    blocks, scales = ref.mxfp4_quantize(w)
    assert torch.equal(w4.blocks, blocks), f"{(w4.blocks != blocks).sum()} bytes differ"
    assert torch.equal(w4.scales, scales)


@pytest.mark.parametrize("shape", [(32,), (3, 64), (2, 5, 96), (7, 1024)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_matches_ref_exactly(shape, dtype, isa):
    blocks, scales = ref.mxfp4_quantize(_weights(shape))
    scales[..., 0] = 0                                          # 2^-127: the subnormal scale
    with gptcore.backend("cpp"):
        w = gptcore.mxfp4_dequantize(gptcore.MXFP4Tensor(blocks, scales), dtype)
    expected = ref.mxfp4_dequantize(blocks, scales, dtype)
    assert w.dtype == dtype
    # e2m1 value times a power of two is exact in fp32; the cast to dtype rounds the same way.
    assert torch.equal(w, expected), f"max diff {(w.float() - expected.float()).abs().max()}"


def test_opcheck():
    w = _weights((4, 64))
    torch.library.opcheck(torch.ops.gptcore.mxfp4_quantize, (w,))
    blocks, scales = torch.ops.gptcore.mxfp4_quantize(w)
    torch.library.opcheck(torch.ops.gptcore.mxfp4_dequantize, (blocks, scales, torch.bfloat16))
