"""Drop-in use in Hugging Face transformers: attn_implementation / experts_implementation
"gptcore" and gptcore.patch give the same logits and gradients as transformers' eager code."""
import pytest
import torch

import gptcore

transformers = pytest.importorskip("transformers", reason="transformers is not installed")


def _tiny(name):
    common = dict(vocab_size=61, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)
    if name == "mistral":      # GQA + sliding window
        return transformers.MistralConfig(intermediate_size=96, sliding_window=5, **common)
    if name == "mixtral":      # SwiGLU experts, softmax routing
        return transformers.MixtralConfig(intermediate_size=48, num_local_experts=5,
                                          num_experts_per_tok=2, **common)
    if name == "gpt_oss":      # sinks, alternating windows, interleaved clamped experts + biases
        return transformers.GptOssConfig(intermediate_size=48, num_local_experts=5,
                                         num_experts_per_tok=2, sliding_window=4, **common)
    if name == "gemma2":       # softcap, query_pre_attn_scalar scaling, tanh-gelu MLP
        return transformers.Gemma2Config(intermediate_size=96, sliding_window=4,
                                         query_pre_attn_scalar=24, **common)
    raise KeyError(name)


def _pair(name):
    """The same randomly initialised model twice: eager, and gptcore."""
    torch.manual_seed(0)
    eager = transformers.AutoModelForCausalLM.from_config(_tiny(name), attn_implementation="eager")
    for p in eager.parameters():            # non-zero sinks and biases: exercise every term
        if p.dim() <= 2 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.5)
    ours = transformers.AutoModelForCausalLM.from_config(
        _tiny(name), attn_implementation="gptcore",
        **({"experts_implementation": "gptcore"} if name in ("mixtral", "gpt_oss") else {}))
    ours.load_state_dict(eager.state_dict())
    return eager.eval(), ours.eval()


@pytest.mark.parametrize("name", ["mistral", "mixtral", "gpt_oss", "gemma2"])
def test_logits_and_gradients_match_eager(name):
    eager, ours = _pair(name)
    ids = torch.randint(0, 61, (2, 13))
    expected = eager(ids).logits
    got = ours(ids).logits
    # fp32 through two layers, two summation orders: rounding only.
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)
    expected.square().mean().backward()
    got.square().mean().backward()
    for (n, a), b in zip(ours.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=2e-5, rtol=2e-4, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("name", ["mistral", "gpt_oss"])
def test_padded_batch_matches_eager(name):
    eager, ours = _pair(name)
    ids = torch.randint(0, 61, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[0, :4] = 0        # left padding (generation)
    mask[2, 7:] = 0        # right padding (training batches)
    expected = eager(ids, attention_mask=mask).logits
    got = ours(ids, attention_mask=mask).logits
    keep = mask.bool()
    # Padded positions are garbage in both; real tokens must agree to fp32 rounding.
    torch.testing.assert_close(got[keep], expected[keep], atol=2e-5, rtol=2e-5)


def test_patch_switches_an_existing_model():
    eager, _ = _pair("mixtral")
    ids = torch.randint(0, 61, (1, 9))
    expected = eager(ids).logits
    model = gptcore.patch(eager)
    assert model is eager
    assert model.config._attn_implementation == "gptcore"
    assert model.config._experts_implementation == "gptcore"
    torch.testing.assert_close(model(ids).logits, expected, atol=2e-5, rtol=2e-5)


def test_generate_with_kv_cache_matches_eager():
    eager, ours = _pair("mistral")
    ids = torch.randint(0, 61, (1, 6))
    out_e = eager.generate(ids, max_new_tokens=8, do_sample=False)
    out_g = ours.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(out_e, out_g)


def test_patch_rejects_a_plain_module():
    with pytest.raises(TypeError, match="model"):
        gptcore.patch(torch.nn.Linear(2, 2))
