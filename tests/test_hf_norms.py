"""gptcore.patch's `norms`: the RMSNorm layers of every supported transformers family computed by
gptcore.rms_norm (counted), with the layer's own logits and gradients; calls it cannot compute
as transformers does go to the layer's forward; unpatch restores eager exactly; the patched
model still saves, copies and pickles."""
import copy
import io

import pytest
import torch

import gptcore
from gptcore.integrations import hf_norms

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from test_hf import CONFIGS, FAMILIES, MOE, TOL, V, _tiny  # noqa: E402


def _eager(name, dtype=torch.float32):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        _tiny(name), attn_implementation="eager",
        **({"experts_implementation": "eager"} if name in MOE else {}))
    for p in model.parameters():              # gains away from 1 (Gemma's from 0): every term counts
        if p.dim() == 1:
            torch.nn.init.normal_(p, mean=0.5, std=0.3)
    return model.to(dtype).eval()


def _norm_layers(model):
    return [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]


@pytest.fixture
def counted(monkeypatch):
    """Counts gptcore.rms_norm calls."""
    calls = []
    real = gptcore.rms_norm

    def rms_norm(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)
    monkeypatch.setattr(gptcore, "rms_norm", rms_norm)
    return calls


def test_every_family_has_a_style():
    for name in FAMILIES:
        classes = {type(m).__name__ for m in _norm_layers(_eager(name))}
        assert classes and classes <= hf_norms.STYLES.keys(), (name, classes)


@pytest.mark.parametrize("name", FAMILIES)
def test_patched_norms_give_the_layers_logits_and_gradients(name, counted):
    eager, ours = _eager(name), _eager(name)
    gptcore.patch(ours, attention=False, experts=False)
    assert ours.config._attn_implementation == "eager"
    ids = torch.randint(0, V, (2, 11))
    outputs = [model.train()(ids, labels=ids) for model in (eager, ours)]
    # every RMSNorm layer ran once per forward (Qwen3's q/k norms too)
    assert len(counted) == len(_norm_layers(ours))
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, **TOL)
    for out in outputs:
        out.loss.backward()
    for (n, a), b in zip(ours.named_parameters(), eager.parameters()):
        # fp32 gradients through two layers and the loss: rounding of O(1e-2) sums.
        torch.testing.assert_close(a.grad, b.grad, atol=2e-5, rtol=2e-4, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt_oss"])
def test_bf16_as_accurate_as_the_layers_own(name, counted):
    """One rounding where Llama's layer rounds twice: measured against the fp32 model, the
    patched bf16 model is no further off than eager bf16."""
    exact, eager, ours = _eager(name), _eager(name, torch.bfloat16), _eager(name, torch.bfloat16)
    gptcore.patch(ours, attention=False, experts=False)
    ids = torch.randint(0, V, (2, 13))
    want = exact(ids).logits
    err_eager = (eager(ids).logits.float() - want).abs().mean()
    err_ours = (ours(ids).logits.float() - want).abs().mean()
    assert counted and set(counted) == {torch.bfloat16}
    # 1.5x: a margin for which side's rounding happens to land closer on 1.6k logits.
    assert err_ours <= 1.5 * err_eager, (err_ours, err_eager)


def test_calls_it_cannot_compute_alike_go_to_the_layer(counted):
    model = _eager("llama")
    gptcore.patch(model, attention=False)
    layer = model.model.norm
    x = torch.randn(3, 64)
    # fp32 gain, bf16 input: Llama's product promotes to fp32, so the layer's own forward runs
    got = layer(x.bfloat16())
    assert got.dtype == torch.float32 and not counted
    assert torch.equal(got, type(layer).forward(layer, x.bfloat16()))
    # float64: gptcore's kernels compute in fp32
    model.double()
    ids = torch.randint(0, V, (1, 7))
    logits = model(ids).logits
    assert logits.dtype == torch.float64 and not counted
    gptcore.unpatch(model)
    assert torch.equal(model(ids).logits, logits)


@pytest.mark.parametrize("name", ["qwen3", "gemma2", "mixtral"])
def test_unpatch_restores_eager_exactly(name):
    model = _eager(name)
    ids = torch.randint(0, V, (1, 9))
    before = model(ids).logits
    gptcore.patch(model)
    gptcore.patch(model)                               # twice: still one original to go back to
    assert all("forward" in vars(m) for m in _norm_layers(model))
    gptcore.unpatch(model)
    assert not any("forward" in vars(m) for m in _norm_layers(model))
    assert torch.equal(model(ids).logits, before)


def test_norms_can_be_left_out():
    model = _eager("llama")
    gptcore.patch(model, norms=False)
    assert model.config._attn_implementation == "gptcore"
    assert not any("forward" in vars(m) for m in _norm_layers(model))
    gptcore.unpatch(model)
    assert model.config._attn_implementation == "eager"


def test_patched_model_saves_copies_and_pickles():
    model = _eager("qwen3")
    keys = list(model.state_dict())
    gptcore.patch(model, attention=False)
    ids = torch.randint(0, V, (1, 9))
    want = model(ids).logits
    assert list(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    assert all(vars(m)["forward"].layer is m for m in _norm_layers(clone))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (clone, loaded):
        torch.testing.assert_close(other(ids).logits, want, rtol=0, atol=0)
        gptcore.unpatch(other)
