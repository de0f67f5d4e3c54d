"""bf16 MoE experts (x and weights bf16) on every ISA level: at avx512_bf16 they run the fused
vdpbf16ps kernel for few rows per expert (csrc/moe/moe_bf16_cpu.cpp) and the blocked vdpbf16ps GEMMs
for more (csrc/moe/moe_bf16_blocked_cpu.cpp) or, on a CPU where oneDNN runs bf16 on AMX, oneDNN's
matmul from 8 rows per expert; elsewhere the fp32 tiles or oneDNN; every level against gptcore.ref
computed in fp32 on the same bf16 values."""
import pytest
import torch

import gptcore
from gptcore import ref

pytest.importorskip("gptcore._C", reason="the C++ extension is not built")
ops = torch.ops.gptcore
assert gptcore.available_backends()["cpp"]

U = 2.0**-8  # bf16 unit roundoff (8 significand bits)


def make(T, H, I, E, k, bias, seed=0, skew=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).bfloat16()
    logits = torch.randn(T, E, generator=g)
    if skew:  # expert 0 takes most tokens: one expert with many rows, others few or none
        logits[:, 0] += 3
    w, idx = ref.route(logits, k)
    gu = (torch.randn(E, 2 * I, H, generator=g) / H**0.5).bfloat16()
    dn = (torch.randn(E, H, I, generator=g) / I**0.5).bfloat16()
    gub = torch.randn(E, 2 * I, generator=g) if bias else None
    db = torch.randn(E, H, generator=g) if bias else None
    return x, idx, w, gu, dn, gub, db


def error_bound(x, idx, w, gu, dn, gub, activation, y32, onednn):
    """What the bf16 roundings may change: the output's own rounding (U |y|), each GLU
    activation rounded to bf16 before the down projection (U |a|, a 1-ulp flip between our
    fp32 and the reference's fp32 pre-activations included) reaching y through |w| |down|;
    where `onednn` (its bf16 matmul rounds products to bf16), also x @ gate_up^T rounded
    (U |h - bias| |da/dh|, to first order) and a @ down^T rounded (U |w| |a @ down^T|)."""
    spread = torch.zeros_like(y32)
    for e in range(gu.shape[0]):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        h0 = x[tok].float() @ gu[e].float().T
        h = (h0 + (gub[e] if gub is not None else 0)).requires_grad_()
        a = ref.glu_activation(h, activation)
        da = a.detach().abs()
        we = w[tok, slot, None].abs()
        if onednn:  # each h element feeds one a element: the gradient of a.sum() is da/dh
            (dadh,) = torch.autograd.grad(a.sum(), h)
            hd = (dadh * h0).abs()
            da = da + (hd[:, 0::2] + hd[:, 1::2] if activation == "gpt_oss"
                       else hd[:, : hd.shape[1] // 2] + hd[:, hd.shape[1] // 2:])
            spread.index_add_(0, tok, (a.detach() @ dn[e].float().T).abs() * we)
        spread.index_add_(0, tok, (da @ dn[e].float().abs().T) * we)
    # fp32 sums of <= a few hundred O(1) terms in another order: 1e-5 absolute
    return U * y32.abs() + U * spread + 1e-5


def runs_onednn(isa, x, idx, gu, dn):
    """Whether these experts run oneDNN's bf16 matmul (at::mm per expert): below avx512_bf16,
    and at it on an AMX CPU from 8 rows per expert where the fused kernel does not take them
    (moe_bf16.h's rule, restated: the test must know which bound applies)."""
    from gptcore import _C
    if isa != "avx512_bf16":
        return True
    on_amx = "oneDNN on AMX" in dict(_C.build_info())["paths"]["moe_experts bf16"]
    T, k, E, H, I = x.shape[0], idx.shape[1], gu.shape[0], x.shape[1], dn.shape[2]
    fused = T * k <= 2 * E or H % 2 or I % 2
    return on_amx and not fused and T * k >= 8 * E


def check(x, idx, w, gu, dn, gub, db, activation, isa):
    y = ops.moe_experts_fwd(x, idx, w, gu, dn, gub, db, activation, 1.702, 7.0)
    assert y.dtype == torch.bfloat16
    y32 = ref.moe_experts(x.float(), idx, w, gu.float(), dn.float(), activation=activation,
                          gate_up_bias=gub, down_bias=db)
    err = (y.float() - y32).abs()
    bound = error_bound(x, idx, w, gu, dn, gub, activation, y32,
                        onednn=runs_onednn(isa, x, idx, gu, dn))
    worst = (err - bound).max().item() if err.numel() else 0.0
    assert worst <= 0, f"max |diff| {err.max().item():.3g}, exceeds its bound by {worst:.3g}"


# H: every tail width of a 32-value bf16 vector (1..31), 32, 33, 80 (the activation does not
# touch the dot products: test_shapes covers the activations). T=4: 2 rows per expert, the fused
# dot kernel; T=12: 6 rows, the blocked GEMMs for even H (16-lane pairs: tails of every width).
@pytest.mark.parametrize("T", [4, 12])
def test_every_k_tail(isa, T):
    for H in list(range(1, 34)) + [80]:
        check(*make(T, H, 3 if T == 4 else 4, 4, 2, bias=True, seed=H), "silu", isa)


@pytest.mark.parametrize("T,H,I,E,k,bias,skew", [
    (1, 64, 40, 8, 2, False, False),     # decode: two experts, one row each
    (1, 50, 45, 4, 2, True, False),      # decode: blocks of 16, 8, 4 weight rows and a tail
    (16, 80, 72, 8, 2, True, False),     # ~4 rows per expert, I = 2 tiles + 8
    (19, 48, 17, 6, 2, True, False),     # empty experts likely, row tails
    (32, 33, 40, 8, 2, False, True),     # skewed: expert 0 has > 16 rows
    (40, 32, 33, 16, 3, True, True),     # skewed: > 64 rows (two row blocks) in expert 0
])
@pytest.mark.parametrize("activation", ["silu", "gpt_oss"])
def test_shapes(isa, T, H, I, E, k, bias, skew, activation):
    x, idx, w, gu, dn, gub, db = make(T, H, I, E, k, bias, seed=T, skew=skew)
    if T > 2:
        idx[2, 0] = -1  # a dropped slot contributes nothing
    check(x, idx, w, gu, dn, gub, db, activation, isa)


# Rows per expert for the blocked kernels (> 4 rows per expert on average): none, tails of a
# 16-token panel, and 1, 2, 3 and 4+ panels (their register blocks: 8x2, 8x3, 4x4 + tails).
BLOCKED_COUNTS = [0, 5, 17, 33, 50, 70]


@pytest.mark.parametrize("activation", ["silu", "gelu", "gpt_oss"])
def test_blocked_many_rows(isa, activation):
    """H=80: down-projection tiles of 64 + 16 rows; I=46: gate/up tiles of 32 + 14 columns (row
    tails below 8 and 4; 28 interleaved rows for gpt_oss)."""
    *_, gu, dn, gub, db = make(1, 80, 46, len(BLOCKED_COUNTS), 1, bias=True, seed=7)
    g = torch.Generator().manual_seed(8)
    idx = torch.repeat_interleave(torch.arange(len(BLOCKED_COUNTS)),
                                  torch.tensor(BLOCKED_COUNTS))[:, None]
    x = torch.randn(idx.shape[0], 80, generator=g).bfloat16()
    w = torch.rand(idx.shape[0], 1, generator=g)
    check(x, idx, w, gu, dn, gub, db, activation, isa)


def test_no_tokens(isa):
    x, idx, w, gu, dn, _, _ = make(0, 32, 8, 4, 2, bias=False)
    assert ops.moe_experts_fwd(x, idx, w, gu, dn, None, None, "silu", 1.702, 7.0).shape == (0, 32)
