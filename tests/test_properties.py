"""Property-based tests of attention with hypothesis: every backend against gptcore.ref and the
reference against the naive loops of tests/naive.py, forward and backward, over drawn shapes
(0 and 1 in every size, odd head dims, Sq != Sk, GQA), masks, sinks, softcap, dtypes, memory
layouts and values (x30 logits, a NaN query row). Profiles ("ci", "long") are in conftest.py."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gptcore
import naive
from gptcore import ref
from checks import close_scaled

# Scaled max-error bounds, |got - want| <= tol * max(1, max|want|), per input dtype: fp32 differs
# from the reference only in summation order (~1e-6 measured; 1e-4 leaves room for x30 logits);
# bf16 and fp16 outputs are rounded once (2^-8 and 2^-11 relative) after fp32 accumulation, and
# gradients of bf16 inputs carry a few roundings, so one to three ulps.
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 4e-3}
LAYOUTS = ("contiguous", "transposed", "sliced", "expanded")
TRITON_EXAMPLES = max(4, settings.default.max_examples // 2)   # the interpreter is slow


def make(shape, dtype, layout, gen):
    """A tensor of `shape` (B, H, S, D) in `layout`: contiguous; heads and rows transposed in
    memory; a slice of wider rows; or one batch entry expanded (batch stride 0)."""
    B, H, S, D = shape
    if layout == "transposed":
        t = torch.randn(B, S, H, D, generator=gen).transpose(1, 2)
    elif layout == "sliced":
        t = torch.randn(B, H, S, D + 3, generator=gen)[..., :D]
    elif layout == "expanded":
        t = torch.randn(1, H, S, D, generator=gen).expand(B, H, S, D)
    else:
        t = torch.randn(B, H, S, D, generator=gen)
    return t.to(dtype)


# Sequence lengths in three bands, so that a run of a dozen examples reaches every kernel path:
# under 16 (one partial tile), 16-40 (the C++ kernels' 16-row tiles, several of the
# interpreter's 16-wide blocks) and 64-80 (several 64-row query blocks, a masked tail).
LENGTHS = st.one_of(st.integers(0, 9), st.integers(16, 40), st.integers(64, 80))
# The Triton interpreter's tiles are 16 wide, so lengths up to 40 take every path it has (several
# blocks, masked tails); it runs programs one by one in NumPy, where 64-80 costs seconds.
INTERPRETER_LENGTH = 40


@st.composite
def attention_cases(draw, dtypes=(torch.float32,)):
    Hkv = draw(st.integers(1, 3))
    case = dict(B=draw(st.integers(0, 2)), Hkv=Hkv, Hq=Hkv * draw(st.integers(0, 3)),
                Sq=draw(LENGTHS), Sk=draw(LENGTHS),
                D=draw(st.sampled_from([1, 3, 5, 8, 16, 33])),
                dtype=draw(st.sampled_from(dtypes)), layout=draw(st.sampled_from(LAYOUTS)),
                logit_scale=draw(st.sampled_from([1.0, 30.0])), seed=draw(st.integers(0, 2**16)))
    options = dict(causal=draw(st.booleans()),
                   window=draw(st.one_of(st.none(), st.integers(1, 6),
                                         st.tuples(st.integers(-1, 5), st.integers(-1, 5)))),
                   softcap=draw(st.sampled_from([None, 5.0])),
                   scale=draw(st.sampled_from([None, 0.3])))
    return case, options, draw(st.booleans())


def inputs(case, sinks):
    gen = torch.Generator().manual_seed(case["seed"])
    B, Hq, Hkv, Sq, Sk, D, dtype, layout = (case[n] for n in ("B", "Hq", "Hkv", "Sq", "Sk", "D",
                                                             "dtype", "layout"))
    q = make((B, Hq, Sq, D), dtype, layout, gen) * case["logit_scale"]
    k, v = make((B, Hkv, Sk, D), dtype, layout, gen), make((B, Hkv, Sk, D), dtype, layout, gen)
    s = torch.randn(Hq, generator=gen).to(dtype) if sinks else None
    dout = torch.randn(B, Hq, Sq, D, generator=gen).to(dtype)
    dlse = torch.randn(B, Hq, Sq, generator=gen)
    return (q, k, v, s), dout, dlse


def run(backend, tensors, dout, dlse, options, varlen=None):
    """(out, lse, grads of q, k, v[, sinks]) of one call on `backend`; dlse reaches lse too."""
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    q, k, v, s = leaves
    with gptcore.backend(backend):
        if varlen is None:
            out, lse = gptcore.attention(q, k, v, sinks=s, return_lse=True, **options)
        else:
            out, lse = gptcore.attention_varlen(q, k, v, *varlen, sinks=s, return_lse=True,
                                                **options)
    torch.autograd.backward([out, lse], [dout, dlse])
    return out.detach(), lse.detach(), [t.grad for t in leaves if t is not None]


def same_lse(name, got, want, tol):
    """Equal -inf (rows that see nothing) at the same places, close elsewhere."""
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)), f"{name}: -inf rows differ"
    finite = ~torch.isneginf(want)
    close_scaled(name, got[finite], want[finite], tol)


def compare(backend, tensors, dout, dlse, options, varlen=None):
    tol = TOL[tensors[0].dtype]
    out, lse, grads = run(backend, tensors, dout, dlse, options, varlen)
    ref_out, ref_lse, ref_grads = run("ref", tensors, dout, dlse, options, varlen)
    close_scaled("out", out, ref_out, tol)
    same_lse("lse", lse, ref_lse, tol)
    for name, g, want in zip(("dq", "dk", "dv", "dsinks"), grads, ref_grads):
        assert g.shape == want.shape, f"{name}: shape {tuple(g.shape)} != {tuple(want.shape)}"
        assert bool(torch.isfinite(want).all()), f"ref {name} is not finite"
        close_scaled(name, g, want, tol)


@given(attention_cases(dtypes=(torch.float32, torch.bfloat16, torch.float16)))
def test_cpp_attention_matches_ref(drawn):
    case, options, sinks = drawn
    compare("cpp", *inputs(case, sinks), options)


@settings(max_examples=TRITON_EXAMPLES)
@given(attention_cases())
def test_triton_attention_matches_ref(drawn):
    case, options, sinks = drawn
    case.update(Sq=min(case["Sq"], INTERPRETER_LENGTH), Sk=min(case["Sk"], INTERPRETER_LENGTH))
    compare("triton", *inputs(case, sinks), options)


@given(attention_cases())
def test_ref_attention_matches_naive_loops(drawn):
    case, options, sinks = drawn
    # naive is slow and fp64, and ref has no length-dependent paths: short sequences suffice
    case.update(B=min(case["B"], 1), Sq=min(case["Sq"], 20), Sk=min(case["Sk"], 20),
                dtype=torch.float64)
    tensors, dout, dlse = inputs(case, sinks)
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    out, lse = ref.attention(*leaves[:3], sinks=leaves[3], return_lse=True, **options)
    torch.autograd.backward([out, lse], [dout, dlse.double()])
    grads = [t.grad for t in leaves if t is not None]
    out, lse = out.detach(), lse.detach()
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    want_out, want_lse = naive.attention(*leaves[:3], sinks=leaves[3], **options)
    live = [t for t in leaves if t is not None]
    finite = ~torch.isneginf(want_lse)
    loss = (want_out * dout).sum() + (want_lse[finite] * dlse.double()[finite]).sum()
    # naive builds empty outputs from scratch: then nothing reaches the inputs (zero gradients)
    want_grads = (torch.autograd.grad(loss, live, allow_unused=True) if loss.requires_grad
                  else [None] * len(live))
    # fp64 on both sides: only summation order differs.
    close_scaled("out", out, want_out, 1e-9)
    same_lse("lse", lse, want_lse, 1e-9)
    for name, g, want, t in zip(("dq", "dk", "dv", "dsinks"), grads, want_grads, live):
        close_scaled(name, g, torch.zeros_like(t) if want is None else want, 1e-9)


@pytest.mark.parametrize("backend", ["ref", "cpp", "triton"])
@settings(max_examples=TRITON_EXAMPLES)
@given(attention_cases(), st.data())
def test_nan_query_row_stays_in_its_row(backend, drawn, data):
    case, options, sinks = drawn
    if backend == "triton":
        case.update(Sq=min(case["Sq"], INTERPRETER_LENGTH), Sk=min(case["Sk"], INTERPRETER_LENGTH))
    case.update(B=max(case["B"], 1), Hq=max(case["Hq"], case["Hkv"]), Sq=max(case["Sq"], 1))
    (q, k, v, s), _, _ = inputs(case, sinks)
    b, h, i = (data.draw(st.integers(0, n - 1)) for n in (case["B"], case["Hq"], case["Sq"]))
    poisoned = q.clone()
    poisoned[b, h, i] = float("nan")
    with gptcore.backend(backend):
        clean = gptcore.attention(q, k, v, sinks=s, **options)
        out = gptcore.attention(poisoned, k, v, sinks=s, **options)
    others = torch.ones(out.shape[:3], dtype=torch.bool)
    others[b, h, i] = False
    assert not bool(torch.isnan(out[others]).any()), "NaN spread out of its query row"
    assert torch.equal(out[others], clean[others]), "other rows changed"


@st.composite
def varlen_cases(draw):
    n = draw(st.integers(0, 4))
    lens = st.lists(st.one_of(st.integers(0, 6), st.integers(16, 40), st.integers(64, 70)),
                    min_size=n, max_size=n)
    Hkv = draw(st.integers(1, 2))
    return (dict(lens_q=draw(lens), lens_k=draw(lens), Hkv=Hkv, Hq=Hkv * draw(st.integers(0, 2)),
                 D=draw(st.sampled_from([1, 5, 8, 17])), seed=draw(st.integers(0, 2**16)),
                 transposed=draw(st.booleans())),
            dict(causal=draw(st.booleans()),
                 window=draw(st.one_of(st.none(), st.integers(1, 4))),
                 softcap=draw(st.sampled_from([None, 5.0]))),
            draw(st.booleans()))


def varlen_inputs(case, sinks):
    gen = torch.Generator().manual_seed(case["seed"])

    def packed(T, H):                  # (T, H, D), heads-major in memory when transposed
        if case["transposed"]:
            return torch.randn(H, T, case["D"], generator=gen).transpose(0, 1)
        return torch.randn(T, H, case["D"], generator=gen)

    def offsets(lens):
        return torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))],
                            dtype=torch.int32)
    Tq, Tk = sum(case["lens_q"]), sum(case["lens_k"])
    tensors = (packed(Tq, case["Hq"]), packed(Tk, case["Hkv"]), packed(Tk, case["Hkv"]),
               torch.randn(case["Hq"], generator=gen) if sinks else None)
    varlen = (offsets(case["lens_q"]), offsets(case["lens_k"]), max(case["lens_q"], default=0),
              max(case["lens_k"], default=0))
    return tensors, torch.randn(Tq, case["Hq"], case["D"], generator=gen), \
        torch.randn(Tq, case["Hq"], generator=gen), varlen


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@settings(max_examples=TRITON_EXAMPLES)
@given(varlen_cases())
def test_varlen_matches_ref(backend, drawn):
    case, options, sinks = drawn
    if backend == "triton":
        for lens in ("lens_q", "lens_k"):
            case[lens] = [min(n, INTERPRETER_LENGTH) for n in case[lens]]
    tensors, dout, dlse, varlen = varlen_inputs(case, sinks)
    compare(backend, tensors, dout, dlse, options, varlen)


def test_x30_logits_stay_finite():
    """A fixed example beside the drawn ones: logits of +-30 * |q||k| in every dtype."""
    q = torch.randn(1, 2, 7, 16) * 30
    k = torch.randn(1, 2, 7, 16) * 30
    for dtype in TOL:
        out = gptcore.attention(q.to(dtype), k.to(dtype), k.to(dtype), causal=True)
        assert bool(torch.isfinite(out).all()), dtype
        assert math.isfinite(float(out.float().abs().max()))
