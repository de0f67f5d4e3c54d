"""gptcore.scaled_dot_product_attention keeps torch SDPA's contract. Over torch's parameter grid
(dtypes, batch incl. 0, lengths incl. 0 and 1 and past a 64-row block, odd head dims, GQA,
ranks 3 and 4, causal, key-padding and per-query masks of both kinds and broadcasts, CausalBias
in both alignments, scales incl. negative and zero) it equals torch's math reference in float64,
outputs and gradients, on every backend this machine has; dropout, nested tensors and tensor
subclasses give torch's own values; bad arguments raise torch's exception types. Independent of
pytorch's test file."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

import gptcore
from checks import close_scaled
from gptcore.ops import sdpa

TORCH_SDPA = F.scaled_dot_product_attention
# Max error relative to max(1, max |reference|), against a float64 reference. fp32: another
# summation order, a few ulps (2e-5 still catches a wrong mask or scale, an O(0.1) error).
# fp16 / bf16: inputs are exact in both; P and dS are rounded to the dtype before their matmuls
# and the output once (2^-11, 2^-8 relative), so a few of those units.
TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}
BACKENDS = [name for name, ok in gptcore.available_backends().items() if ok]
# The Triton interpreter computes bf16 tl.dot wrongly (triton issue 11584) and is slow: it runs
# fp32 and fp16 over the smaller shapes.
DEVICE = torch.empty(0).device      # cuda under `make gpu-check` (tests/conftest.py)
ON_GPU = DEVICE.type == "cuda"

# (B, Hq, Hkv, Sq, Sk, D): rank 4; Hkv None = rank 3 (B, S, D).
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (2, 2, 2, 7, 7, 7),
    (3, 4, 2, 5, 13, 16),
    (2, 3, 1, 13, 5, 8),
    (2, 1, 1, 1, 9, 3),
    (3, None, None, 6, 9, 5),
    (2, 2, 2, 0, 5, 8),
    (2, 2, 2, 4, 0, 8),
    (0, 2, 2, 3, 3, 8),
    (1, 2, 2, 67, 67, 80),
    (2, 4, 1, 70, 33, 64),
]
SMALL = SHAPES[:9]
NATIVE_MASKS = ["none", "causal", "pad_bool", "pad_float", "pad_row", "pad_1d", "upper_left",
                "lower_right"]


def make_inputs(shape, dtype, seed):
    B, Hq, Hkv, Sq, Sk, D = shape
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    lead_q, lead_kv = ((B, Sq), (B, Sk)) if Hkv is None else ((B, Hq, Sq), (B, Hkv, Sk))
    q, k, v = (torch.randn(*lead, D, generator=g).to(dtype) for lead in (lead_q, lead_kv, lead_kv))
    return q, k, v, g


def keep_mask(rows, Sk, g):
    """(rows, Sk) bool keep pattern, key 0 hidden for some rows too: not only a suffix."""
    return torch.rand(rows, Sk, generator=g) > 0.4


def mask_for(kind, shape, dtype, g):
    """(attn_mask, is_causal, the boolean (Sq, Sk)-broadcastable keep mask the reference adds)."""
    B, Hq, Hkv, Sq, Sk, D = shape
    pad_shape = (B, 1, Sk) if Hkv is None else (B, 1, 1, Sk)
    if kind == "none":
        return None, False, None
    if kind == "causal":
        return None, True, torch.ones(Sq, Sk, dtype=torch.bool).tril()
    if kind in ("upper_left", "lower_right"):
        maker = causal_upper_left if kind == "upper_left" else causal_lower_right
        diagonal = 0 if kind == "upper_left" else Sk - Sq
        return maker(Sq, Sk), False, torch.ones(Sq, Sk, dtype=torch.bool).tril(diagonal)
    keep = keep_mask(B, Sk, g).view(pad_shape)
    if kind == "pad_row":                                 # one row for every batch entry
        keep = keep_mask(1, Sk, g).view((1,) + pad_shape[1:])
    if kind == "pad_1d":
        keep = keep_mask(1, Sk, g).view(Sk)
    if kind == "pad_float":
        return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, float("-inf")), False, keep
    return keep, False, keep


def reference(q, k, v, keep, scale=None, enable_gqa=False):
    """torch's math backend in float64 with an explicit boolean mask (None: no mask)."""
    with sdpa_kernel(SDPBackend.MATH):
        return TORCH_SDPA(q.double(), k.double(), v.double(), attn_mask=keep, scale=scale,
                          enable_gqa=enable_gqa)


def run(fn, inputs, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves, **kw)
    dout = torch.cos(torch.arange(out.numel(), dtype=torch.float64)).view(out.shape)
    out.backward(dout.to(out.dtype))
    return out, [t.grad for t in leaves]


def assert_contract(q, k, v, mask, is_causal, keep, dtype, scale=None, case=""):
    gqa = q.dim() == 4 and q.shape[1] != k.shape[1]
    got, got_grads = run(gptcore.scaled_dot_product_attention, (q, k, v), attn_mask=mask,
                         is_causal=is_causal, scale=scale, enable_gqa=gqa)
    want, want_grads = run(lambda *t: reference(*t, keep, scale, gqa), (q, k, v))
    assert got.dtype == dtype and got.shape == want.shape
    for name, a, b in zip(("out", "dq", "dk", "dv"), [got, *got_grads], [want, *want_grads]):
        close_scaled(f"{case} {name}", a, b, TOL[dtype])


@pytest.fixture
def no_fallback(monkeypatch):
    """Fails the test if torch's SDPA runs: these calls are gptcore's kernels' to serve."""
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to torch's SDPA")
    monkeypatch.setattr(sdpa, "_TORCH_SDPA", refuse)


def grid(backend):
    interpreted = backend == "triton" and not ON_GPU
    dtypes = [torch.float32, torch.float16] if interpreted else list(TOL)
    shapes = SMALL if interpreted else SHAPES
    return [(d, s) for d in dtypes for s in shapes]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mask_kind", NATIVE_MASKS)
def test_native_calls_match_torch_math(no_fallback, backend, mask_kind):
    for i, (dtype, shape) in enumerate(grid(backend)):
        q, k, v, g = make_inputs(shape, dtype, seed=i)
        mask, is_causal, keep = mask_for(mask_kind, shape, dtype, g)
        with gptcore.backend(backend):
            assert_contract(q, k, v, mask, is_causal, keep, dtype, case=f"{dtype} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [0.37, 2.0, -0.5, -3.0, 0.0])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "pad_bool", "lower_right"])
def test_any_finite_scale_is_served(no_fallback, backend, scale, mask_kind):
    shape = (2, 4, 2, 5, 9, 8)
    q, k, v, g = make_inputs(shape, torch.float32, seed=7)
    mask, is_causal, keep = mask_for(mask_kind, shape, torch.float32, g)
    with gptcore.backend(backend):
        assert_contract(q, k, v, mask, is_causal, keep, torch.float32, scale=scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "pad_float", "lower_right"])
def test_autocast_casts_like_torch(no_fallback, dtype, mask_kind):
    """Inside torch.autocast torch's SDPA first casts float32 inputs (a float mask too) to the
    autocast dtype; gptcore does the same, then its kernels serve the call."""
    shape = (2, 4, 2, 5, 9, 8)
    q, k, v, g = make_inputs(shape, torch.float32, seed=8)
    mask, is_causal, keep = mask_for(mask_kind, shape, torch.float32, g)
    with torch.autocast(DEVICE.type, dtype=dtype):
        got, got_grads = run(gptcore.scaled_dot_product_attention, (q, k, v), attn_mask=mask,
                             is_causal=is_causal, enable_gqa=True)
    want, want_grads = run(lambda *t: reference(*(x.to(dtype) for x in t), keep, None, True),
                           (q, k, v))
    assert got.dtype == dtype and all(t.dtype == torch.float32 for t in got_grads)
    for name, a, b in zip(("out", "dq", "dk", "dv"), [got, *got_grads], [want, *want_grads]):
        close_scaled(name, a, b, TOL[dtype])


def test_autocast_accepts_mixed_dtypes_like_torch():
    q, k, v, _ = make_inputs((2, 2, 2, 5, 7, 8), torch.float32, seed=9)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        want = TORCH_SDPA(q, k.bfloat16(), v, is_causal=True)
        got = gptcore.scaled_dot_product_attention(q, k.bfloat16(), v, is_causal=True)
    assert got.dtype == want.dtype == torch.bfloat16
    close_scaled("out", got, want, TOL[torch.bfloat16])


def other_mask(kind, lead, Hq, Sq, Sk, g):
    """Masks gptcore's kernels cannot express: per query, per head, or whole rows hidden."""
    if kind == "bool_per_query":
        return torch.rand(*lead, Sk, generator=g) > 0.3
    if kind == "float_per_query":
        return torch.randn(*lead, Sk, generator=g)
    if kind == "float_2d":
        return torch.randn(Sq, Sk, generator=g)
    if kind == "bool_heads":
        return torch.rand(Hq, Sq, Sk, generator=g) > 0.5
    return torch.zeros(Sq, Sk).index_fill(0, torch.tensor([1]), float("-inf"))   # row 1 sees none


@pytest.mark.parametrize("kind", ["bool_per_query", "float_per_query", "float_2d", "bool_heads",
                                  "float_hiding_a_row"])
@pytest.mark.parametrize("shape", [(2, 4, 4, 5, 9, 8), (3, None, None, 6, 6, 7)])
def test_other_masks_run_torchs_function_and_match(kind, shape):
    B, Hq, Hkv, Sq, Sk, D = shape
    q, k, v, g = make_inputs(shape, torch.float32, seed=3)
    lead = (B, Sq) if Hkv is None else (B, 1, Sq)
    mask = other_mask(kind, lead, Hq or 1, Sq, Sk, g)
    got, got_grads = run(gptcore.scaled_dot_product_attention, (q, k, v), attn_mask=mask)
    ref_mask = mask if mask.dtype == torch.bool else mask.double()
    want, want_grads = run(lambda *t: reference(*t, ref_mask), (q, k, v))
    for name, a, b in zip(("out", "dq", "dk", "dv"), [got, *got_grads], [want, *want_grads]):
        close_scaled(name, a, b, TOL[torch.float32])


def test_causal_bias_under_the_override_is_served_natively(no_fallback):
    """Under the override torch's function is not F.scaled_dot_product_attention, so CausalBias
    must never reach it as a tensor (its storage is uninitialised)."""
    for Sq, Sk in [(5, 12), (12, 5), (7, 7), (1, 6)]:
        q, k, v, _ = make_inputs((2, 2, 2, Sq, Sk, 8), torch.float32, seed=Sq)
        for maker, diagonal in ((causal_upper_left, 0), (causal_lower_right, Sk - Sq)):
            with gptcore.sdpa_override():
                got = F.scaled_dot_product_attention(q, k, v, attn_mask=maker(Sq, Sk))
            want = reference(q, k, v, torch.ones(Sq, Sk, dtype=torch.bool).tril(diagonal))
            close_scaled(f"{maker.__name__} {Sq}x{Sk}", got, want, TOL[torch.float32])


def test_causal_bias_torch_cannot_serve_gets_torchs_handling():
    """float64 and a bias whose lengths are not the inputs' go to CausalBias's own handling."""
    q, k, v, _ = make_inputs((1, 2, 2, 4, 6, 8), torch.float64, seed=1)
    bias = causal_lower_right(4, 6)
    with gptcore.sdpa_override():
        got = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    want = reference(q, k, v, torch.ones(4, 6, dtype=torch.bool).tril(2))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)   # float64, two summation orders
    with pytest.raises(RuntimeError):                          # torch: (3, 5) does not broadcast
        TORCH_SDPA(q, k, v, attn_mask=causal_lower_right(3, 5))
    with pytest.raises(RuntimeError), gptcore.sdpa_override():
        F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(3, 5))


def test_dropout_runs_torchs_function_with_its_random_stream(caplog):
    """dropout_p > 0 is torch's (gptcore's kernels have no dropout): the same seed gives the
    same bits as torch, gradients included, and one log line says so once per process."""
    sdpa._logged.clear()
    q, k, v, _ = make_inputs((2, 4, 2, 9, 9, 8), torch.float32, seed=5)
    with caplog.at_level(logging.WARNING, logger="gptcore"):
        for p, causal in [(0.2, True), (0.5, False), (1.0, False)]:
            torch.manual_seed(11)
            want, want_grads = run(TORCH_SDPA, (q, k, v), dropout_p=p, is_causal=causal,
                                   enable_gqa=True)
            torch.manual_seed(11)
            with gptcore.sdpa_override():
                got, got_grads = run(F.scaled_dot_product_attention, (q, k, v), dropout_p=p,
                                     is_causal=causal, enable_gqa=True)
            for a, b in zip([got, *got_grads], [want, *want_grads]):
                torch.testing.assert_close(a, b, atol=0, rtol=0)
    lines = [r for r in caplog.records if "dropout_p" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]


class Traced(torch.Tensor):
    """A __torch_function__ subclass that records what it saw and defers to torch."""
    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclasses_and_nested_tensors_get_torchs_function():
    q, k, v, _ = make_inputs((2, 2, 2, 5, 7, 8), torch.float32, seed=2)
    Traced.seen.clear()
    with gptcore.sdpa_override():
        got = F.scaled_dot_product_attention(q.as_subclass(Traced), k, v, is_causal=True)
    assert TORCH_SDPA in Traced.seen            # torch's own function, not the override again
    torch.testing.assert_close(got.as_subclass(torch.Tensor), TORCH_SDPA(q, k, v, is_causal=True),
                               atol=0, rtol=0)
    parts = [torch.randn(n, 2, 8) for n in (3, 6)]
    nested = torch.nested.nested_tensor(parts, layout=torch.jagged).transpose(1, 2)
    with gptcore.sdpa_override():
        got = F.scaled_dot_product_attention(nested, nested, nested)
    for a, b in zip(got.unbind(), TORCH_SDPA(nested, nested, nested).unbind()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def _bad_calls():
    """(name, thunk(f)) pairs: f is an SDPA function; each call is one torch refuses (or one
    whose outcome depends on torch's backend choice)."""
    q = torch.randn(1, 2, 4, 8)
    k = torch.randn(1, 2, 6, 8)
    strided = torch.nested.nested_tensor([torch.randn(3, 2, 8), torch.randn(5, 2, 8)])
    return [
        ("dtypes differ", lambda f: f(q, k.half(), k.half())),
        ("1-D query", lambda f: f(q[0, 0, 0], k[0, 0], k[0, 0])),
        ("int mask", lambda f: f(q, k, k, attn_mask=torch.ones(4, 6, dtype=torch.int64))),
        ("fp16 mask, fp32 query", lambda f: f(q, k, k, attn_mask=torch.zeros(4, 6).half())),
        ("mask shape", lambda f: f(q, k, k, attn_mask=torch.ones(4, 5, dtype=torch.bool))),
        ("dropout_p > 1", lambda f: f(q, k, k, dropout_p=1.5)),
        ("dropout_p < 0", lambda f: f(q, k, k, dropout_p=-0.1)),
        ("is_causal int", lambda f: f(q, k, k, is_causal=1)),
        ("scale str", lambda f: f(q, k, k, scale="a")),
        ("gqa 3 of 2", lambda f: f(torch.randn(1, 3, 4, 8), k, k, enable_gqa=True)),
        ("gqa off", lambda f: f(torch.randn(1, 4, 4, 8), k, k)),
        ("head dims differ", lambda f: f(q, torch.randn(1, 2, 6, 5), k)),
        ("mask and causal, math", lambda f: _math(f, q, k, attn_mask=torch.ones(4, 6) > 0,
                                                  is_causal=True)),
        ("mask and causal, default", lambda f: f(q, k, k, attn_mask=torch.ones(4, 6) > 0,
                                                 is_causal=True)),
        ("CausalBias and causal", lambda f: f(q, k, k, attn_mask=causal_upper_left(4, 6),
                                              is_causal=True)),
        ("non-contiguous nested", lambda f: f(*(strided.transpose(1, 2),) * 3)),
        ("value head dim 5 (allowed)", lambda f: f(q, k, torch.randn(1, 2, 6, 5))),
        ("broadcast batch (allowed)", lambda f: f(torch.randn(3, 2, 4, 8), k, k)),
        ("rank 5 (allowed)", lambda f: f(q[None], k[None], k[None])),
        ("float64 (allowed)", lambda f: f(q.double(), k.double(), k.double())),
    ]


def _math(f, q, k, **kw):
    with sdpa_kernel(SDPBackend.MATH):
        return f(q, k, k, **kw)


def _outcome(thunk, f):
    try:
        return "ok", thunk(f)
    except Exception as err:                           # the type is what is compared
        return type(err), None


@pytest.mark.parametrize("name", [name for name, _ in _bad_calls()])
def test_torchs_exception_types_and_results(name):
    thunk = dict(_bad_calls())[name]
    torch.manual_seed(0)
    want_kind, want = _outcome(thunk, TORCH_SDPA)
    for f in (gptcore.scaled_dot_product_attention, None):
        torch.manual_seed(0)
        if f is None:
            with gptcore.sdpa_override():
                got_kind, got = _outcome(thunk, F.scaled_dot_product_attention)
        else:
            got_kind, got = _outcome(thunk, f)
        assert got_kind == want_kind, (name, got_kind, want_kind)
        if want_kind == "ok":
            for a, b in zip(_parts(got), _parts(want)):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)   # fp32, another order


def _parts(t):
    """A nested result as its components (a GPU may accept the nested call CPU refuses)."""
    return t.unbind() if t.is_nested else [t]


def test_compiled_causal_bias_matches_eager():
    q, k, v, _ = make_inputs((2, 2, 2, 6, 9, 8), torch.float32, seed=4)
    torch._dynamo.reset()
    compiled = torch.compile(gptcore.scaled_dot_product_attention, fullgraph=True)
    for bias, diagonal in ((causal_upper_left(6, 9), 0), (causal_lower_right(6, 9), 3)):
        want = reference(q, k, v, torch.ones(6, 9, dtype=torch.bool).tril(diagonal))
        close_scaled("compiled", compiled(q, k, v, attn_mask=bias), want, TOL[torch.float32])
