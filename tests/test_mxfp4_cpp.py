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


@pytest.mark.parametrize("scale_byte", [0, 1, 2])
@pytest.mark.parametrize("T", [1, 160], ids=["fused", "tiles"])
def test_subnormal_scales_decode_alike_in_every_path(scale_byte, T, isa):
    """OCP e8m0: byte s is 2^(s - 127), byte 0 included (2^-127, a subnormal float). Experts
    whose gate/up blocks all carry such a scale, fed inputs of 2^120, give finite non-zero
    results that every path (dequantise, the fused kernels for few rows, dequantised tiles for
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


# Rows per expert: none, every block of activation rows the fused kernels use (AVX-512: 1-4 with
# 4 weight rows, 5-8 with 2; AVX2: 1 with 8, 2 with 4, 3-4 with 2, 5-8 with 1) and their tails
# (9 = 8 + 1, 17 = 2 x 8 + 1), and both sides of the fused / tiles limits (16 at avx2, 64 at
# avx512).
FUSED_COUNTS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 64, 65]


@pytest.fixture(scope="module", params=[2816, 3104], ids=["down-tiles-11-9", "down-tiles-10-4"])
def fused_problem(request):
    """One expert per row count in FUSED_COUNTS, H=64: with I=2816 (3104) the down projection
    runs in tiles of 11 and 9 (10 and 4) weight rows, every tail below the 8-, 4- and 2-row
    register blocks (8 + 2 + 1, 8 + 1, 8 + 2, 4). Quantised by the C++ kernel (bit-exact with
    ref, tested above) to keep this fast."""
    H, I, E = 64, request.param, len(FUSED_COUNTS)
    g = torch.Generator().manual_seed(I)
    idx = torch.repeat_interleave(torch.arange(E), torch.tensor(FUSED_COUNTS))[:, None]
    x, w = torch.randn(idx.shape[0], H, generator=g), torch.rand(idx.shape[0], 1, generator=g)
    gu4 = gptcore.mxfp4_quantize(torch.randn(E, 2 * I, H, generator=g) / H**0.5)
    dn4 = gptcore.mxfp4_quantize(torch.randn(E, H, I, generator=g) / I**0.5)
    gub, db = torch.randn(E, 2 * I, generator=g), torch.randn(E, H, generator=g)
    wants = {act: ref.moe_experts(x, idx, w, ref.mxfp4_dequantize(gu4.blocks, gu4.scales,
                                                                  torch.float32),
                                  ref.mxfp4_dequantize(dn4.blocks, dn4.scales, torch.float32),
                                  activation=act, gate_up_bias=gub, down_bias=db)
             for act in ("silu", "gpt_oss")}
    return x, idx, w, gu4, dn4, gub, db, wants


@pytest.mark.parametrize("activation", ["silu", "gpt_oss"])
def test_fused_experts_every_row_count(fused_problem, activation, isa):
    """MXFP4 experts against the reference on the same dequantised fp32 weights, at every ISA
    level, over every row count of FUSED_COUNTS and zero tokens."""
    x, idx, w, gu4, dn4, gub, db, wants = fused_problem
    with torch.no_grad():
        got = gptcore.moe_experts(x, idx, w, gu4, dn4, activation=activation, gate_up_bias=gub,
                                  down_bias=db)
        empty = gptcore.moe_experts(x[:0], idx[:0], w[:0], gu4, dn4, activation=activation)
    want = wants[activation]
    # same fp32 weights; fp32 sums of up to 2816 products in another order: a few ulps of the
    # largest output
    err = (got - want).abs().max() / want.abs().max()
    assert err < 1e-5, f"relative error {err:.3g}"
    assert empty.shape == (0, x.shape[1])
