"""gptcore.quantized_linear: the C++ kernels at every ISA level this CPU has against gptcore.ref
over odd shapes (K not a multiple of the group or of any vector width, N = 1, T = 0, T = 1..9 on
both sides of the GEMV / tiled switch at 8 rows), every stored format, fp32 and bf16 activations;
the reference against per-element loops; quantize_weight's rounding bound; bad arguments;
torch.compile."""
import pytest
import torch

import gptcore
from checks import close_scaled
from gptcore import ref

# (format, group_size): per-channel and grouped int8 (48 divides none of the Ks below; 16 and 48
# are whole 8-column slices of the AVX2 GEMV, 48 not of the AVX-512 one's 16; 1 of neither),
# int4 with Q4_0's 32, two blocks of 32 and a small even 6 (the GEMVs take whole blocks of 32
# only), MXFP4 (32 by definition), bf16.
FORMATS = [("bf16", None), ("int8", None), ("int8", 48), ("int8", 16), ("int8", 1), ("int4", 32),
           ("int4", 64), ("int4", 6), ("mxfp4", 32)]
# (N, K): K = 1, odd, one past a block of 32, not a multiple of 16 or of 48; 37 rows of K = 300
# (4 past a slice of 8, 12 past a block of 32) run register blocks of 4 rows, a 1-row tail and
# the prefetch of the rows two blocks ahead.
SIZES = [(1, 1), (5, 33), (17, 100), (3, 67), (70, 160), (37, 300)]
ROWS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 13]
# fp32: the same dequantised weights, products summed in another order (SIMD lanes, sgemm
# blocks): a few ulps of sums of K <= 160 products of O(1) values. bf16 output: one rounding
# of the output, 2^-8 relative.
TOL = {torch.float32: 3e-5, torch.bfloat16: 8e-3}


def _weight(N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, K, generator=g)


def _x(T, K, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, K, generator=g).to(dtype)


@pytest.mark.parametrize("fmt,group", FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("N,K", SIZES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpp_matches_ref(isa, fmt, group, N, K, dtype):
    qw = gptcore.quantize_weight(_weight(N, K), fmt, group)
    bias = torch.randn(N).to(dtype)
    for T in ROWS:
        x = _x(T, K, dtype)
        with gptcore.backend("cpp"):
            got = gptcore.quantized_linear(x, qw, bias if T % 2 else None)
        want = ref.quantized_linear(x, qw.data, qw.scales, fmt, qw.group_size,
                                    bias if T % 2 else None)
        assert got.shape == (T, N) and got.dtype == dtype
        close_scaled(f"{fmt} T={T}", got, want, TOL[dtype])


@pytest.mark.parametrize("scale_byte", [0, 1, 2, 250])
@pytest.mark.parametrize("T", [1, 3])
def test_mxfp4_extreme_scales(isa, scale_byte, T):
    """e8m0 byte s is 2^(s - 127): bytes 0 and 1 are subnormal floats (the GEMVs fold a factor 2
    into them), 250 is 2^123 (6 times it stays finite). Inputs scaled so that the outputs are
    normal, finite and non-zero; a path that flushed a subnormal scale to 0 gives zeros."""
    qw = gptcore.quantize_weight(_weight(13, 70), "mxfp4")
    qw.scales.fill_(scale_byte)
    x = _x(T, 70, torch.float32) * 2.0 ** (120 if scale_byte < 127 else -120)
    want = ref.quantized_linear(x, qw.data, qw.scales, "mxfp4", 32)
    assert want.abs().max() > 0 and want.isfinite().all()
    with gptcore.backend("cpp"):
        got = gptcore.quantized_linear(x, qw)
    # fp32 sums of 70 products in another order: a few ulps of the largest value
    close_scaled(f"byte {scale_byte}", got / want.abs().max(), want / want.abs().max(), 3e-5)


@pytest.mark.parametrize("fmt,group", FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("N,K", [(0, 40), (5, 0)], ids=str)
def test_zero_sizes(isa, fmt, group, N, K):
    qw = gptcore.quantize_weight(_weight(N, K), fmt, group)
    for T in (0, 1, 9):   # no rows, the GEMV, the tiles
        x = _x(T, K, torch.float32)
        with gptcore.backend("cpp"):
            got = gptcore.quantized_linear(x, qw)
        assert got.shape == (T, N) and not got.any()


@pytest.mark.parametrize("fmt,group", FORMATS, ids=lambda v: str(v))
def test_leading_dims_and_strides(fmt, group):
    qw = gptcore.quantize_weight(_weight(6, 40), fmt, group)
    x = _x(2 * 3 * 40, 1, torch.float32).reshape(2, 40, 3).transpose(1, 2)   # (2, 3, 40) strided
    with gptcore.backend("cpp"):
        got = gptcore.quantized_linear(x, qw)
    close_scaled(fmt, got, x @ qw.dequantize().T, TOL[torch.float32])


# ----------------------------------------------------------------------------- the reference

def _dequantize_by_element(qw):
    """W[n, k] from the stored form, one element at a time (the layouts in gptcore/ref.py)."""
    N, K = qw.shape
    W = torch.empty(N, K)
    e2m1 = ref.E2M1_VALUES
    for n in range(N):
        for k in range(K):
            if qw.format == "bf16":
                W[n, k] = qw.data[n, k].float()
            elif qw.format == "int8":
                W[n, k] = int(qw.data[n, k]) * qw.scales[n, k // qw.group_size]
            elif qw.format == "int4":
                code = (int(qw.data[n, k // 2]) >> (4 * (k % 2))) & 0xF
                W[n, k] = (code - 8) * qw.scales[n, k // qw.group_size]
            else:
                code = (int(qw.data[n, k // 2]) >> (4 * (k % 2))) & 0xF
                mag = e2m1[code & 7] * 2.0 ** (int(qw.scales[n, k // 32]) - 127)
                W[n, k] = -mag if code & 8 else mag
    return W


@pytest.mark.parametrize("fmt,group", FORMATS, ids=lambda v: str(v))
def test_ref_dequantize_matches_element_loop(fmt, group):
    qw = gptcore.quantize_weight(_weight(3, 37), fmt, group)
    assert torch.equal(qw.dequantize(), _dequantize_by_element(qw))


@pytest.mark.parametrize("fmt,group", FORMATS, ids=lambda v: str(v))
def test_ref_linear_matches_row_loop(fmt, group):
    qw = gptcore.quantize_weight(_weight(4, 37), fmt, group)
    W, x, bias = _dequantize_by_element(qw), _x(3, 37, torch.float32), torch.randn(4)
    want = torch.tensor([[sum(float(x[t, k]) * float(W[n, k]) for k in range(37)) + float(bias[n])
                          for n in range(4)] for t in range(3)])
    got = ref.quantized_linear(x, qw.data, qw.scales, fmt, qw.group_size, bias)
    close_scaled(fmt, got, want, 1e-5)   # fp32 vs fp64 sums of 37 products


@pytest.mark.parametrize("fmt,group,levels", [("int8", None, 127), ("int8", 16, 127),
                                              ("int4", 32, 7), ("int4", 6, 7)])
def test_quantize_rounds_to_nearest_code(fmt, group, levels):
    """Each value lands within half a step (scale / 2) of its original, and each group's
    largest magnitude is represented exactly (up to one fp32 rounding of the scale)."""
    w = _weight(5, 70)
    qw = gptcore.quantize_weight(w, fmt, group)
    G = qw.group_size
    step = qw.scales.repeat_interleave(G, dim=1)[:, :70]
    err = (qw.dequantize() - w).abs()
    assert bool((err <= step / 2 * (1 + 1e-5)).all()), float((err / step).max())
    amax = torch.nn.functional.pad(w.abs(), (0, -70 % G)).reshape(5, -1, G).amax(-1)
    close_scaled("scales", qw.scales * levels, amax, 1e-6)


def test_zero_group_and_bf16_rounding():
    w = torch.zeros(2, 40)
    w[1, :3] = torch.tensor([1.0, -3.0, 1 + 2 ** -9])
    for fmt in ("int8", "int4", "mxfp4"):
        assert torch.equal(gptcore.quantize_weight(w, fmt).dequantize()[0], torch.zeros(40)), fmt
    assert gptcore.quantize_weight(w, "bf16").dequantize()[1, 2] == 1.0  # round to nearest even


# ----------------------------------------------------------------------------- bad input

def test_bad_arguments_name_themselves():
    qw = gptcore.quantize_weight(_weight(4, 64), "int8", 16)
    x = _x(2, 64, torch.float32)
    with pytest.raises(TypeError, match="qweight"):
        gptcore.quantized_linear(x, qw.data)
    with pytest.raises(ValueError, match="data: expected shape"):
        gptcore.quantized_linear(_x(2, 63, torch.float32), qw)
    with pytest.raises(ValueError, match="group_size"):
        gptcore.quantize_weight(_weight(4, 64), "int4", 5)
    with pytest.raises(ValueError, match="format"):
        gptcore.quantize_weight(_weight(4, 64), "int3")
    with pytest.raises(ValueError, match="bias"):
        gptcore.quantized_linear(x, qw, torch.zeros(3))
    with pytest.raises(ValueError, match="w: expected finite"):
        gptcore.quantize_weight(torch.full((2, 32), float("nan")), "int8")


@pytest.mark.parametrize("args,error", [
    (lambda d, s: (d.float(), s, "int8", 16, None), TypeError),      # data dtype
    (lambda d, s: (d, s[:, :2], "int8", 16, None), ValueError),      # scales shape
    (lambda d, s: (d, s, "int8", 0, None), ValueError),              # group size
    (lambda d, s: (d, s, "int5", 16, None), ValueError),             # format
    (lambda d, s: (d, None, "int8", 16, None), ValueError),          # missing scales
])
def test_direct_cpp_calls_are_checked(args, error):
    qw = gptcore.quantize_weight(_weight(4, 64), "int8", 16)
    with pytest.raises(error):
        torch.ops.gptcore.quantized_linear(_x(2, 64, torch.float32), *args(qw.data, qw.scales))


# ----------------------------------------------------------------------------- torch.compile

class _Tiny(torch.nn.Module):
    def __init__(self, qw):
        super().__init__()
        self.qw = qw

    def forward(self, x):
        return torch.relu(gptcore.quantized_linear(x, self.qw)) * 2


@pytest.mark.parametrize("fmt", ["int8", "int4", "mxfp4", "bf16"])
def test_compile_fullgraph(fmt):
    module = _Tiny(gptcore.quantize_weight(_weight(8, 40), fmt))
    x = _x(3, 40, torch.float32)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    close_scaled(fmt, compiled(x), module(x), 1e-6)   # the same kernel either way
