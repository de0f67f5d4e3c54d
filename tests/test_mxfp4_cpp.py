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


@pytest.mark.parametrize("scale_byte", [0, 1, 2])
@pytest.mark.parametrize("T", [1, 16], ids=["matvec", "tiles"])
def test_subnormal_scales_decode_alike_in_every_path(scale_byte, T, isa):
    """OCP e8m0: byte s is 2^(s - 127), byte 0 included (2^-127, a subnormal float). Experts
    whose gate/up blocks all carry such a scale, fed inputs of 2^120, give finite non-zero
    results that every path (dequantise, the fused mat-vec for few rows, dequantised tiles for
    more, the Triton kernel) must agree on; a path that flushed the scale to 0 gives zeros."""
    torch.manual_seed(scale_byte)
    E, I, H, top_k = 2, 32, 64, 1
    blocks, scales = ref.mxfp4_quantize(torch.randn(E, 2 * I, H))
    gate_up = gptcore.MXFP4Tensor(blocks, torch.full_like(scales, scale_byte))
    down = gptcore.mxfp4_quantize(torch.randn(E, H, I))
    x = torch.randn(T, H) * 2.0 ** 120
    indices, weights = torch.randint(0, E, (T, top_k)), torch.ones(T, top_k)
    want = ref.moe_experts(x, indices, weights, ref.mxfp4_dequantize(blocks, gate_up.scales,
                                                                    torch.float32),
                           down.dequantize(torch.float32), activation="silu")
    assert want.abs().max() > 0
    for backend in ("cpp", "triton"):
        with gptcore.backend(backend), torch.no_grad():
            got = gptcore.moe_experts(x, indices, weights, gate_up, down, activation="silu")
        # fp32 sums over H = 64 and I = 32 terms in another order: a few ulps of the largest value
        err = (got - want).abs().max() / want.abs().max()
        assert err < 1e-5, f"{backend}: relative error {err:.3g}"
