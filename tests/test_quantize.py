"""gptcore.quantize / gptcore.unpatch / save_quantized / load_quantized on a gptcore.GPT and on a
transformers Llama (tiny random configs): which layers are swapped, that unpatch restores the
model exactly, the logits error each format gives (tolerances reasoned from the formats' step
sizes below), a per-layer error bound that follows from the rounding, and a safetensors round
trip."""
import pytest
import torch
from torch import nn

import gptcore
from gptcore.nn import QuantizedLinear

# Logits error RMS / logits std. A weight w ~ N(0, s^2) rounds to a step h with an RMS error of
# h / sqrt(12): bf16 h <= 2^-8 |w| (0.1% of s); int8 per channel h = amax / 127 with amax about
# 3.5 s over K = 64..400 (0.8% of s); int4 per 32 columns h = amax / 7 with amax about 2.1 s
# (8.7% of s); MXFP4 a power-of-two scale and e2m1 steps (about the same as int4). Each layer
# adds its relative error independently: about sqrt(10) times one layer's through the 10 to 20
# products between embedding and logits. Bounds: those estimates rounded up by a third.
REL_TOL = {"bf16": 0.01, "int8": 0.035, "int4": 0.35, "mxfp4": 0.35}
FORMATS = tuple(REL_TOL)


def _rel_error(got, want):
    return ((got - want).pow(2).mean().sqrt() / want.std()).item()


def _gpt():
    torch.manual_seed(0)
    return gptcore.GPT(gptcore.GPTConfig.preset("names")).eval()


def _idx():
    return torch.randint(0, 27, (3, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_gpt_logits_error_within_the_formats_bound(fmt):
    model, idx = _gpt(), _idx()
    with torch.no_grad():
        want, _ = model(idx)
        gptcore.quantize(model, fmt)
        got, _ = model(idx)
    error = _rel_error(got, want)
    assert 0 < error <= REL_TOL[fmt], f"{fmt}: relative logits error {error:.4f}"


def test_gpt_layers_swapped_and_unpatch_restores_exactly():
    model, idx = _gpt(), _idx()
    linears = {n: m for n, m in model.named_modules() if type(m) is nn.Linear}
    with torch.no_grad():
        want, _ = model(idx)
        gptcore.quantize(model, "int8")
        swapped = {n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}
        assert swapped == set(linears) - {"lm_head"}          # skip=("lm_head",) by default
        assert type(model.lm_head) is nn.Linear
        gptcore.unpatch(model)
        got, _ = model(idx)
    assert all(model.get_submodule(n) is m for n, m in linears.items())
    assert torch.equal(got, want)


def test_skip_patterns_and_head_format():
    model = gptcore.quantize(_gpt(), "int4", skip=("lm_head", "blocks.0.*", "fc2"), head="int8")
    layout = {n: (m.format if isinstance(m, QuantizedLinear) else None)
              for n, m in model.named_modules() if isinstance(m, (nn.Linear, QuantizedLinear))}
    assert layout["lm_head"] == "int8" and layout["blocks.0.attn.q_proj"] == "int8"
    assert layout["blocks.1.ffn.fc2"] == "int8" and layout["blocks.1.ffn.fc1"] == "int4"


def test_refusals_name_the_argument():
    model = _gpt()
    with pytest.raises(ValueError, match="weights"):
        gptcore.quantize(model, "int2")
    with pytest.raises(TypeError, match="skip"):
        gptcore.quantize(model, "int8", skip="lm_head")
    with pytest.raises(ValueError, match="model: expected a model switched"):
        gptcore.unpatch(model)
    gptcore.quantize(model, "int8", keep_original=False)
    with pytest.raises(ValueError, match="model: expected a model not quantised"):
        gptcore.quantize(model, "int8")
    with pytest.raises(ValueError, match="keep_original=False"):
        gptcore.unpatch(model)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_per_layer_error_within_the_rounding_bound(fmt):
    """|y_q - y| <= sum_k |x_k| * step(n, k) / 2 for each output: the rounding bound, with fp32
    slack for the two sums."""
    torch.manual_seed(2)
    linear, x = nn.Linear(100, 30), torch.randn(5, 100)
    layer = QuantizedLinear.from_linear(linear, fmt)
    step = layer.scales.repeat_interleave(layer.group_size, dim=1)[:, :100]     # (30, 100)
    with torch.no_grad():
        error = (layer(x) - linear(x)).abs()
        bound = x.abs() @ (step / 2).T + 1e-5 * (x.abs() @ linear.weight.abs().T)
    assert bool((error <= bound).all()), float((error / bound).max())
    assert float(error.max()) > 0


def test_generate_runs_on_the_quantised_gpt():
    model = gptcore.quantize(_gpt(), "int8")
    out = model.generate(_idx()[:1, :4], 8, temperature=0)
    assert out.shape == (1, 12)


def test_save_and_load_round_trip(tmp_path):
    model, idx = gptcore.quantize(_gpt(), "int4", head="int8"), _idx()
    gptcore.save_quantized(model, tmp_path / "q.safetensors")
    torch.manual_seed(5)
    fresh = gptcore.GPT(gptcore.GPTConfig.preset("names")).eval()     # other random weights
    gptcore.load_quantized(fresh, tmp_path / "q.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], model(idx)[0])
    with pytest.raises(ValueError, match="path"):
        from safetensors.torch import save_file
        save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        gptcore.load_quantized(_gpt(), tmp_path / "plain.safetensors")


# ----------------------------------------------------------------------------- transformers

def _llama():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    config = transformers.LlamaConfig(vocab_size=61, hidden_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      intermediate_size=96, attention_dropout=0.0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    for p in model.parameters():           # weights of O(1): the HF init's 0.02 hides errors
        if p.dim() == 2:
            nn.init.normal_(p, std=p.shape[1] ** -0.5)
    return model


@pytest.mark.parametrize("fmt", FORMATS)
def test_llama_logits_error_within_the_formats_bound(fmt):
    model, ids = _llama(), _idx()
    with torch.no_grad():
        want = model(ids).logits
        gptcore.quantize(model, fmt)
        got = model(ids).logits
    error = _rel_error(got, want)
    assert 0 < error <= REL_TOL[fmt], f"{fmt}: relative logits error {error:.4f}"


def test_llama_patch_and_quantize_then_unpatch_restores_both():
    model, ids = _llama(), _idx()
    with torch.no_grad():
        want = model(ids).logits
        gptcore.patch(model)
        gptcore.quantize(model, "mxfp4", head="bf16")
        assert model.config._attn_implementation == "gptcore"
        out = model.generate(ids[:1, :5], max_new_tokens=4, do_sample=False)
        assert out.shape == (1, 9)
        gptcore.unpatch(model)
        assert model.config._attn_implementation != "gptcore"
        assert not any(isinstance(m, QuantizedLinear) for m in model.modules())
        got = model(ids).logits
    torch.testing.assert_close(got, want, atol=0, rtol=0)
