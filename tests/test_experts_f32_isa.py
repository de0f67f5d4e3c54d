"""fp32 MoE experts at every ISA level against gptcore.ref computed in fp64: every row count
0..40 per expert and 64, 65, 70 (the small-row kernels up to their thresholds, 64 rows at avx512
and 32 at avx2, sgemm tiles above), with every K and column tail of the AVX2 kernels' 8 lanes
(H, I mod 8 cover 0..7) and several of AVX-512's 16, both weight layouts (gptcore's (E, 2I, H)
and the K-major transposes transformers stores), biases, every activation, and experts without
rows; a Mixtral-sized expert on a few row counts; gradients through the same dispatch."""
import pytest
import torch

import gptcore
from gptcore import ref

_C = pytest.importorskip("gptcore._C", reason="the C++ extension is not built")
ops = torch.ops.gptcore
assert gptcore.available_backends()["cpp"]

ACTS = ["silu", "gelu", "gpt_oss"]


def kmajor(w):
    """The same values stored K-major: a transposed view of an (E, K, N) tensor."""
    return w.transpose(1, 2).contiguous().transpose(1, 2)


def experts(counts, H, I, seed, bias):
    """One slot per token (k=1): expert e gets counts[e] rows, tokens in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    E = len(counts)
    idx = torch.repeat_interleave(torch.arange(E), torch.tensor(counts))
    idx = idx[torch.randperm(idx.numel(), generator=g)][:, None]
    T = idx.shape[0]
    x = torch.randn(T, H, generator=g)
    w = torch.rand(T, 1, generator=g)
    gu = torch.randn(E, 2 * I, H, generator=g) / H**0.5
    dn = torch.randn(E, H, I, generator=g) / I**0.5
    gub = torch.randn(E, 2 * I, generator=g) if bias else None
    db = torch.randn(E, H, generator=g) if bias else None
    return x, idx, w, gu, dn, gub, db


def check(x, idx, w, gu, dn, gub, db, activation, layout, tol):
    if layout == "kmajor":
        gu, dn = kmajor(gu), kmajor(dn)
    y = ops.moe_experts_fwd(x, idx, w, gu, dn, gub, db, activation, 1.702, 7.0)
    d = [t.double() if t is not None else None for t in (x, w, gu, dn, gub, db)]
    want = ref.moe_experts(d[0], idx, d[1], d[2], d[3], activation=activation,
                           gate_up_bias=d[4], down_bias=d[5])
    err = (y.double() - want).abs().max().item()
    assert torch.allclose(y.double(), want, atol=tol, rtol=tol), f"max |diff| {err:.3g}"


@pytest.mark.parametrize("layout", ["rows", "kmajor"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("H,I", [(40, 24), (33, 27), (37, 30), (39, 34), (44, 20)])
def test_every_row_count(isa, H, I, activation, bias, layout):
    """Expert e has e rows, e = 0..40, and three more with 64, 65 and 70 (tokens in shuffled
    order): every register block of 1-6 rows (AVX-512) or 1-4 (AVX2) and its remainders in the
    small-row kernels, both sides of their thresholds, and sgemm above. K tails mod 16 of 8, 1,
    5, 7, 12 (H) and 8, 11, 14, 2, 4 (I), mod 8 every one of 0..7; I = 27 output columns leave
    remainders of every column block."""
    x, idx, w, gu, dn, gub, db = experts(list(range(41)) + [64, 65, 70], H, I, H * I, bias)
    # fp32 sums of <= 54 O(1) products against fp64: a few hundred fp32 ulps at most
    check(x, idx, w, gu, dn, gub, db, activation, layout, 2e-5)


@pytest.mark.parametrize("layout", ["rows", "kmajor"])
def test_mixtral_sized_expert(isa, layout):
    """H1024 I2816, the sizes of the benchmark: 3 and 17 rows (the small-row kernels at avx2 and
    avx512) and 70 (sgemm), no rows for the second expert."""
    x, idx, w, gu, dn, gub, db = experts([3, 0, 17, 70], 1024, 2816, 5, True)
    # sums of 1024 and 2816 fp32 products of O(1) terms: ~sqrt(K) ulps of O(1) outputs
    check(x, idx, w, gu, dn, gub, db, "silu", layout, 3e-5)


@pytest.mark.parametrize("layout", ["rows", "kmajor"])
@pytest.mark.parametrize("activation", ACTS)
def test_gradients(isa, activation, layout):
    x, idx, w, gu, dn, gub, db = experts([0, 1, 2, 5, 9, 12], 40, 24, 9, True)
    if layout == "kmajor":
        gu, dn = kmajor(gu), kmajor(dn)
    leaves = [t.requires_grad_() for t in (x, w, gu, dn, gub, db)]
    dy = torch.randn(x.shape)
    results = []
    for backend in ("cpp", "ref"):
        with gptcore.backend(backend):
            y = gptcore.moe_experts(x, idx, w, gu, dn, activation=activation, gate_up_bias=gub,
                                    down_bias=db)
            results.append((y, *torch.autograd.grad(y, leaves, dy)))
    for name, got, want in zip(("y", "dx", "dw", "dgu", "ddown", "dgub", "ddb"), *results):
        # fp32 against fp32 in another summation order, sums of <= 40 O(1) terms
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), \
            f"{name}: {(got - want).abs().max():.3g}"


def test_build_info_names_the_expert_path(isa):
    path = _C.build_info()["paths"]["moe_experts fp32"]
    assert ("AVX-512 small-row kernel" in path) == (isa in ("avx512", "avx512_bf16")), path
    assert ("AVX2 small-row kernel" in path) == (isa == "avx2"), path
