"""The C++ CPU attention (csrc/attention/*.cpp) against gptcore.ref: outputs, lse and every
gradient (q, k, v, sinks, through out and lse) over odd shapes, masks and dtypes, at every ISA
level; plus torch.compile and the C++ checks of varlen offsets (opcheck:
test_opcheck.py)."""
import pytest
import torch

import gptcore

_C = pytest.importorskip("gptcore._C", reason="the C++ extension is not built")

# fp32: both sides accumulate in fp32 in different orders (tiles, online softmax, split keys);
# observed max error 3e-6 on these shapes, so 2e-5 absolute + 1e-5 relative has ~5x margin.
FP32_TOL = dict(atol=2e-5, rtol=1e-5)
# bf16 / fp16: inputs are identical and both sides compute in fp32, but results are rounded to
# 8 (bf16) / 11 (fp16) mantissa bits, and our backward's Delta uses the rounded output: a few
# ulps of the largest gradient (bf16 ulp at 1.0 is 2^-7 = 7.8e-3).
LOW_TOL = {torch.bfloat16: dict(atol=3e-2, rtol=2e-2), torch.float16: dict(atol=5e-3, rtol=5e-3)}

# (B, Hq, Hkv, Sq, Sk, D, options)
CASES = [
    (2, 4, 4, 37, 53, 1, dict()),
    (1, 8, 2, 150, 150, 16, dict(causal=True)),
    (1, 8, 1, 70, 200, 80, dict(causal=True, window=128, sinks=True)),
    (1, 2, 2, 200, 70, 128, dict(causal=True)),                     # rows that see no key
    (1, 4, 4, 130, 130, 256, dict(window=(3, 5), softcap=2.0)),
    (2, 2, 1, 1, 1, 64, dict(causal=True)),
    (1, 8, 2, 100, 100, 64, dict(causal=True, window=1, sinks=True)),
    (1, 2, 2, 90, 150, 32, dict(window=(-1, 4))),
    (1, 2, 2, 90, 150, 32, dict(window=(10, -1), sinks=True)),
    (1, 8, 2, 1, 1000, 128, dict(sinks=True)),                      # decode: keys split
    (1, 4, 1, 3, 777, 64, dict(causal=True)),
    (2, 8, 8, 200, 200, 64, dict(causal=True)),                     # enough items: no split
    (1, 4, 2, 65, 97, 16, dict(causal=True, softcap=5.0, sinks=True)),
]


def _inputs(B, Hq, Hkv, Sq, Sk, D, dtype, sinks, contiguous=True):
    def make(H, S):
        t = torch.randn(B, S, H, D, dtype=dtype).transpose(1, 2)  # (B, H, S, D), strided
        return (t.contiguous() if contiguous else t).requires_grad_()
    q, k, v = make(Hq, Sq), make(Hkv, Sk), make(Hkv, Sk)
    s = torch.randn(Hq, requires_grad=True) if sinks else None
    return q, k, v, s


def _run(backend, fn, inputs, grad_out, grad_lse):
    """Output, lse and gradients of sum(out * grad_out) + sum(lse * grad_lse) under `backend`."""
    with gptcore.backend(backend):
        out, lse = fn(*inputs)
    live = [t for t in inputs if t is not None and t.requires_grad]
    finite = torch.isfinite(lse)
    loss = (out.float() * grad_out).sum() + (torch.where(finite, lse, 0) * grad_lse).sum()
    return (out, lse, *torch.autograd.grad(loss, live))


def _compare(fn, inputs, out_shape, lse_shape, tol):
    torch.manual_seed(1)
    grad_out, grad_lse = torch.randn(out_shape), torch.randn(lse_shape)
    ours = _run("cpp", fn, inputs, grad_out, grad_lse)
    want = _run("ref", fn, inputs, grad_out, grad_lse)
    names = ["out", "lse", "dq", "dk", "dv", "dsinks"]
    for name, a, b in zip(names, ours, want):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a.float(), b.float(), **tol, msg=lambda m: f"{name}: {m}")


def _dense(B, Hq, Hkv, Sq, Sk, D, opts, dtype, tol, contiguous=True):
    torch.manual_seed(0)
    inputs = _inputs(B, Hq, Hkv, Sq, Sk, D, dtype, opts.get("sinks"), contiguous)
    kw = {k: v for k, v in opts.items() if k != "sinks"}

    def fn(q, k, v, s):
        return gptcore.attention(q, k, v, sinks=s, return_lse=True, **kw)
    _compare(fn, inputs, (B, Hq, Sq, D), (B, Hq, Sq), tol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:6]}{c[6]}")
def test_dense_fp32(case, isa):
    _dense(*case, torch.float32, FP32_TOL)


@pytest.mark.parametrize("case", [CASES[i] for i in (1, 2, 4, 11)], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_dense_low_precision(case, dtype):
    _dense(*case, dtype, LOW_TOL[dtype])


def test_non_contiguous(isa):
    _dense(2, 4, 2, 45, 61, 48, dict(causal=True, sinks=True), torch.float32, FP32_TOL,
           contiguous=False)


VARLEN = [
    ([5, 0, 130, 1, 64], [5, 0, 200, 7, 64], dict(causal=True, window=16, sinks=True)),
    ([33, 70, 0], [40, 70, 3], dict()),
    ([1, 0, 1], [300, 0, 129], dict(softcap=3.0)),                  # decode-like
]


# Every level: the column layout (AVX2, AVX-512) and the row kernels see each sequence's own
# length; bf16 is converted per tile (or runs vdpbf16ps tiles at avx512_bf16).
@pytest.mark.parametrize("lens", VARLEN, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_varlen(lens, dtype, isa):
    _varlen(lens, dtype)


def _varlen(lens, dtype):
    len_q, len_k, opts = lens
    torch.manual_seed(0)
    Hq, Hkv, D = 4, 2, 24

    def packed(total, H):
        return torch.randn(total, H, D, dtype=dtype, requires_grad=True)
    q, k, v = packed(sum(len_q), Hq), packed(sum(len_k), Hkv), packed(sum(len_k), Hkv)
    s = torch.randn(Hq, requires_grad=True) if opts.get("sinks") else None
    cu = [torch.tensor([0] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
          for lens in (len_q, len_k)]
    kw = {k: v for k, v in opts.items() if k != "sinks"}

    def fn(q, k, v, s):
        return gptcore.attention_varlen(q, k, v, cu[0], cu[1], max(len_q), max(len_k), sinks=s,
                                        return_lse=True, **kw)
    tol = FP32_TOL if dtype == torch.float32 else LOW_TOL[dtype]
    _compare(fn, (q, k, v, s), (sum(len_q), Hq, D), (sum(len_q), Hq), tol)


def test_bad_offsets_raise_in_cpp():
    q, k = torch.randn(6, 2, 8), torch.randn(6, 2, 8)
    good = torch.tensor([0, 3, 6], dtype=torch.int32)
    for bad in ([0, 4, 3], [1, 3, 6], [0, 3, 7]):
        cu = torch.tensor(bad, dtype=torch.int32)
        with pytest.raises(ValueError, match="cu_seqlens"):
            torch.ops.gptcore.attention_varlen_fwd(q, k, k, cu, good, 6, 6, None, 1.0, -1, -1,
                                                   0.0)
        with pytest.raises(ValueError, match="cu_seqlens"):
            torch.ops.gptcore.attention_varlen_fwd(q, k, k, good, cu, 6, 6, None, 1.0, -1, -1,
                                                   0.0)


def test_torch_compile_fullgraph():
    gptcore.available_backends()  # loads the backends outside the trace
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 20, 16, requires_grad=True) for _ in range(3))

    def f(q, k, v):
        return gptcore.attention(q * 2, k, v, causal=True, window=8).sum()
    with gptcore.backend("cpp"):
        compiled = torch.compile(f, fullgraph=True)
        got = compiled(q, k, v)
        (dq,) = torch.autograd.grad(got, q)
    with gptcore.backend("ref"):
        want = f(q, k, v)
        (dq_ref,) = torch.autograd.grad(want, q)
    torch.testing.assert_close(got, want, **FP32_TOL)
    torch.testing.assert_close(dq, dq_ref, **FP32_TOL)
