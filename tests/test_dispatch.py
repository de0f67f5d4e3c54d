"""Backend dispatch (gptcore.available_backends, gptcore.backend, GPTCORE_BACKEND, the auto
fallback and its warning), torch.compile(fullgraph=True) over every op (opcheck: test_opcheck.py)."""
import importlib
import importlib.util
import warnings

import pytest
import torch

import gptcore
import gptcore.backends.ref  # noqa: F401  (defines the torch.ops.gptcore.ref_* ops)

# the module; `gptcore.ops.backend` itself names the context-manager function
dispatch = importlib.import_module("gptcore.ops.backend")


def _chosen(op="attention_fwd"):
    """The op name dispatch would call now for CPU tensors."""
    return dispatch._choose(op, "cpu")


# ----------------------------------------------------------------------------- choosing

@pytest.fixture
def fresh_environment():
    """The environment is read once per process (dispatch.environment); these tests change it."""
    dispatch.environment.cache_clear()
    yield
    dispatch.environment.cache_clear()


def test_available_backends(monkeypatch, fresh_environment):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    found = gptcore.available_backends()
    assert set(found) == {"ref", "cpp", "triton"}
    assert all(isinstance(v, bool) for v in found.values())
    assert found["ref"] is True
    assert found["cpp"] is (importlib.util.find_spec("gptcore._C") is not None)
    if not torch.cuda.is_available():
        assert found["triton"] is False          # no CUDA and no interpreter: nothing to run on


def test_backend_context_forces_ref():
    with gptcore.backend("ref"):
        assert _chosen("mxfp4_quantize") == "ref_mxfp4_quantize"
        assert dispatch.select("route", torch.device("cpu")) is torch.ops.gptcore.ref_route
    assert dispatch.current() == "auto"


def test_backend_contexts_nest_and_unwind():
    with gptcore.backend("ref"):
        with gptcore.backend("auto"):
            assert dispatch.current() == "auto"
            with pytest.raises(KeyError):
                with gptcore.backend("ref"):
                    raise KeyError("inside")            # the stack unwinds on an exception
            assert dispatch.current() == "auto"
        assert dispatch.current() == "ref"
    assert dispatch.current() == "auto"


def test_invalid_backend_name():
    with pytest.raises(ValueError, match=r"gptcore.backend: expected one of .* got 'cuda'"):
        with gptcore.backend("cuda"):
            pass


def test_env_var_forces_ref(monkeypatch, fresh_environment):
    monkeypatch.setenv("GPTCORE_BACKEND", "ref")
    assert _chosen("mxfp4_quantize") == "ref_mxfp4_quantize"
    with gptcore.backend("auto"):                       # the context wins over the environment
        assert dispatch.current() == "auto"
    monkeypatch.setenv("GPTCORE_BACKEND", "cpp")
    assert _chosen("mxfp4_quantize") == "ref_mxfp4_quantize"    # read once per process
    dispatch.environment.cache_clear()
    assert _chosen("mxfp4_quantize") == "mxfp4_quantize"
    monkeypatch.setenv("GPTCORE_BACKEND", "fast")
    dispatch.environment.cache_clear()
    with pytest.raises(ValueError, match=r"GPTCORE_BACKEND: expected one of .* got 'fast'"):
        _chosen()


def test_forcing_triton_on_cpu_without_interpreter_raises(monkeypatch, fresh_environment):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q = torch.randn(1, 1, 2, 4)
    with gptcore.backend("triton"), pytest.raises(RuntimeError) as err:
        gptcore.attention(q, q, q)
    message = str(err.value)
    assert "gptcore backend 'triton' cannot run attention_fwd on cpu tensors" in message
    # the reason: no triton backend in this install, or CPU tensors need the interpreter
    assert "TRITON_INTERPRET=1" in message or "triton" in message.split(":", 1)[1], message


@pytest.fixture
def fresh_choices():
    """Backend choices are cached per process (that is what makes the warning once-only)."""
    dispatch._resolve.cache_clear()
    yield
    dispatch._resolve.cache_clear()


def test_auto_falls_back_to_ref_with_one_warning_per_op(monkeypatch, fresh_choices):
    real = dispatch._unfit
    monkeypatch.setattr(dispatch, "_unfit", lambda name, op, device: "pretend it is missing"
                        if name == "cpp" else real(name, op, device))
    logits, w = torch.randn(3, 4), torch.randn(2, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            gptcore.route(logits, 2)
            gptcore.mxfp4_quantize(w)
    messages = [str(c.message) for c in caught if "gptcore" in str(c.message)]
    assert len(messages) == 2, messages
    assert any("cannot run route on cpu" in m for m in messages)
    assert any("cannot run mxfp4_quantize on cpu" in m for m in messages)
    assert all("pretend it is missing" in m and "pure-PyTorch reference" in m for m in messages)
    assert _chosen("route") == "ref_route"


# ----------------------------------------------------------------------------- torch.compile

def _attention(q, k, v, sinks):
    return gptcore.attention(q, k, v, causal=True, window=3, sinks=sinks, softcap=5.0)


def _attention_varlen(q, k, v, sinks):
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    return gptcore.attention_varlen(q[0, :, :5].transpose(0, 1), k[0, :, :5].transpose(0, 1),
                                    v[0, :, :5].transpose(0, 1), cu, cu, 3, 3, causal=True,
                                    sinks=sinks)


def _route(logits):
    return gptcore.route(logits, 2, scoring="sigmoid")[0]


def _moe_experts(x, weights, gate_up, down):
    indices = torch.tensor([[0, 2], [1, -1], [2, 0]])
    return gptcore.moe_experts(x, indices, weights, gate_up, down, activation="gpt_oss")


def _moe(x, router, gate_up, down):
    y, aux = gptcore.moe(x, router, gate_up, down, 2)
    return y, aux["load_balancing_loss"], aux["z_loss"]


def _compile_inputs(name):
    g = torch.Generator().manual_seed(0)
    if name in ("attention", "attention_varlen"):
        shapes = [(1, 4, 6, 8), (1, 2, 6, 8), (1, 2, 6, 8), (4,)]
    elif name == "route":
        shapes = [(5, 6)]
    elif name == "moe_experts":
        shapes = [(3, 4), (3, 2), (3, 6, 4), (3, 4, 3)]
    else:
        shapes = [(5, 4), (3, 4), (3, 6, 4), (3, 4, 3)]
    return [torch.randn(s, generator=g, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("fn", [_attention, _attention_varlen, _route, _moe_experts, _moe],
                         ids=lambda f: f.__name__[1:])
def test_compile_fullgraph_matches_eager(fn):
    inputs = _compile_inputs(fn.__name__[1:])
    eager_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    # aot_eager traces exactly what inductor would (fakes, autograd) without minutes of C++
    # code generation on 2 cores; fullgraph=True fails on any graph break.
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    with gptcore.backend("ref"):
        got, want = compiled(*inputs), fn(*eager_inputs)
    got, want = (got,) if torch.is_tensor(got) else got, (want,) if torch.is_tensor(want) else want
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)   # the same ref ops run in both
    sum(t.sum() for t in got).backward()
    sum(t.sum() for t in want).backward()
    for a, b in zip(inputs, eager_inputs):
        # fp32 sums may be reordered by tracing
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-6)
