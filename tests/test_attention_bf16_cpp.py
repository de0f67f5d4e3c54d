"""bf16 attention on every ISA level: at avx512_bf16 the vdpbf16ps tiles (csrc/attention/attention_bf16_cpu.cpp,
csrc/common/bf16_gemm_avx512.cpp) or, on a CPU where oneDNN runs bf16 on AMX, torch's flash
attention for the masks it computes as ours (csrc/attention/attention_onednn.h); below it bf16
converted to fp32; all against gptcore.ref in fp32 on the same bf16 values, with error bounds
derived from the bf16 roundings."""
import pytest
import torch

import gptcore
from gptcore import ref

pytest.importorskip("gptcore._C", reason="the C++ extension is not built")
ops = torch.ops.gptcore
assert gptcore.available_backends()["cpp"]

U = 2.0**-8  # bf16 unit roundoff (8 significand bits)


def onednn_route(q, k, kw):
    """Whether this call goes to torch's flash attention (attention_onednn.h's rule, restated:
    the test must know which bound applies)."""
    from gptcore import _C
    on_amx = "oneDNN on AMX" in dict(_C.build_info())["paths"].get("attention bf16", "")
    return (on_amx and _C.isa() == "avx512_bf16" and "sinks" not in kw and
            not kw.get("softcap") and kw.get("window") is None and q.shape[2] >= 16 and
            (not kw.get("causal") or q.shape[2] == k.shape[2]))


def check_forward(q, k, v, **kw):
    out, lse = gptcore.attention(q, k, v, return_lse=True, **kw)
    assert out.dtype == torch.bfloat16
    f = [t.float() for t in (q, k, v)]
    sinks = kw.pop("sinks", None)
    o32, lse32 = ref.attention(*f, sinks=sinks, return_lse=True, **kw)
    # sum_j p_j |v_j| (over the same probabilities; the sink carries no value)
    spread = ref.attention(f[0], f[1], f[2].abs(), sinks=sinks, **kw)
    # the output's rounding (U |o|) and each probability rounded to bf16 before P V
    # (U sum_j p_j |v_j|); fp32 sums over <= 1000 keys in another order and our 2-ulp exp: 1e-5
    bound = U * o32.abs() + U * spread + 1e-5
    err = (out.float() - o32).abs()
    worst = (err - bound).max().item() if err.numel() else 0.0
    assert worst <= 0, f"out: max |diff| {err.max().item():.3g}, exceeds its bound by {worst:.3g}"
    if onednn_route(q, k, kw):
        # torch sums probabilities it also rounds to bf16 for P V: each term off by at most U/2
        # relative, so the sum too, and lse = log(sum) by at most U/2
        torch.testing.assert_close(lse, lse32, atol=U / 2, rtol=0)
    else:
        # lse from fp32 scores of exact bf16 values: fp32 sums in another order, 2-ulp exp
        torch.testing.assert_close(lse, lse32, atol=2e-5, rtol=1e-5)


def bf16(*shape):
    return torch.randn(*shape).bfloat16()


# D: every width of a 16-column panel's tail and odd D (pair padding); Sk: every key tail of
# a 16-key panel, and 129 = one 128-key tile + 1; Sq != Sk.
def test_every_tail(isa):
    torch.manual_seed(0)
    for D in range(1, 18):
        for Sk in (D, 16 + D, 129):
            check_forward(bf16(1, 2, 3, D), bf16(1, 2, Sk, D), bf16(1, 2, Sk, D))
    check_forward(bf16(1, 2, 3, 80), bf16(1, 2, 45, 80), bf16(1, 2, 45, 80), causal=True)


# (B, Hq, Hkv, Sq, Sk, D, options)
CASES = [
    (1, 4, 2, 150, 150, 64, dict(causal=True)),                       # GQA, two query blocks
    (1, 2, 2, 200, 70, 80, dict(causal=True)),                        # rows that see no key
    (1, 4, 1, 70, 200, 128, dict(causal=True, window=100, sinks=True)),
    (1, 2, 2, 90, 150, 1, dict(window=(3, 5), softcap=2.0)),
    (1, 8, 2, 1, 1000, 128, dict(sinks=True)),                        # decode: keys split
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:6]}{c[6]}")
def test_cases(isa, case):
    B, Hq, Hkv, Sq, Sk, D, opts = case
    torch.manual_seed(Sq + Sk + D)
    kw = dict(opts)
    if kw.pop("sinks", False):
        kw["sinks"] = torch.randn(Hq)
    check_forward(bf16(B, Hq, Sq, D), bf16(B, Hkv, Sk, D), bf16(B, Hkv, Sk, D), **kw)


# (Hq, Hkv, Sq, Sk, causal): Sq != Sk stays on our kernels; Sq == Sk (GQA, causal or not) takes
# torch's flash attention on an AMX CPU at avx512_bf16
GRADIENT_CASES = [(4, 4, 37, 53, True), (4, 2, 40, 40, True), (2, 2, 33, 33, False)]


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=str)
def test_gradients(isa, case):
    """The backward reads the forward's bf16 output and fp32 lse: gradients vs ref."""
    Hq, Hkv, Sq, Sk, causal = case
    torch.manual_seed(3)
    q, k, v = (bf16(1, H, S, 80).requires_grad_() for H, S in ((Hq, Sq), (Hkv, Sk), (Hkv, Sk)))
    g = torch.randn(1, Hq, Sq, 80)
    grads = []
    for backend in ("cpp", "ref"):
        with gptcore.backend(backend):
            out = gptcore.attention(q, k, v, causal=causal)
        grads.append(torch.autograd.grad((out.float() * g).sum(), (q, k, v)))
    for name, a, b in zip("qkv", *grads):
        # both sides compute in fp32 from the same bf16 values; results rounded to bf16 and our
        # Delta uses the rounded output: a few ulps of the largest gradient (2^-7 at 1.0)
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=2e-2,
                                   msg=lambda m: f"d{name}: {m}")
