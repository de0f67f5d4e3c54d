"""gptcore.GPT: microgpt's exact function (against a plain-Python transcription), packed and
embedding inputs, KV-cache generation, parameter counts, microgpt weight round trip."""
import pytest
import torch

import gptcore
from gptcore import GPT, GPTConfig

import microgpt_reference as mg

BACKENDS = ["ref", "cpp", "triton"]   # triton runs CPU tensors under TRITON_INTERPRET=1

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: tests/conftest.py


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_layer", [1, 2])
def test_from_microgpt_computes_microgpt(backend, n_layer):
    sd = mg.init_state_dict(n_layer, seed=n_layer)
    tokens = [26, 4, 12, 12, 0, 26, 3, 0, 21, 8, 3, 26, 18, 14, 15, 7]    # 16 = block_size
    expected = torch.tensor(mg.forward(sd, tokens), dtype=torch.float64)
    expected_loss = mg.loss(sd, tokens)
    model = GPT.from_microgpt(sd)
    idx = torch.tensor([tokens])
    with gptcore.backend(backend), torch.no_grad():
        logits, _ = model(idx)
        _, loss = model(idx[:, :-1], idx[:, 1:])
    # float32 model vs float64 scalar loops through 2-3 rmsnorms and ~10 dot products of
    # width <= 64 with |logits| ~ 1: float32 rounding is ~1e-6; 2e-5 leaves 10x margin.
    torch.testing.assert_close(logits[0].double(), expected, atol=2e-5, rtol=0)
    assert abs(loss.item() - expected_loss) < 2e-5, (loss.item(), expected_loss)


def test_microgpt_round_trip_and_param_count():
    sd = mg.init_state_dict(1)
    model = GPT.from_microgpt(sd)
    assert model.num_params() == 4192
    assert GPT(GPTConfig.preset("microgpt")).num_params() == 4192
    back = model.to_microgpt()
    assert set(back) == set(sd)
    for name, value in sd.items():
        assert torch.equal(back[name], torch.tensor(value, dtype=torch.float32)), name


def _counted(config):
    """Parameters counted from the config by hand (no bias, untied, as the presets are)."""
    c = config
    hd = c.head_dim or c.d_model // c.n_head
    kv = c.n_kv_head or c.n_head
    attn = c.d_model * hd * (2 * c.n_head + 2 * kv) + (c.n_head if c.sinks else 0)
    norms = 2 * c.d_model if c.norm_gain else 0
    if c.n_experts:
        expert = 3 * c.d_model * c.d_ff + ((2 * c.d_ff + c.d_model)
                                           if c.moe_activation == "gpt_oss" else 0)
        ffn, ffn_active = c.d_model * c.n_experts + c.n_experts * expert, \
            c.d_model * c.n_experts + c.top_k * expert
    else:
        ffn = ffn_active = c.d_model * c.d_ff * (3 if c.mlp == "swiglu" else 2)
    outer = 2 * c.vocab_size * c.d_model + (c.block_size * c.d_model if c.pos == "learned" else 0)
    outer += c.d_model if c.final_norm and c.norm_gain else 0
    return (outer + c.n_layer * (attn + norms + ffn), outer + c.n_layer * (attn + norms + ffn_active))


@pytest.mark.parametrize("preset", ["microgpt", "names", "names-moe", "gpt-oss-tiny"])
def test_preset_param_counts(preset):
    config = GPTConfig.preset(preset)
    model = GPT(config)
    assert (model.num_params(), model.num_params(active=True)) == _counted(config)


@pytest.mark.parametrize("preset", ["names", "names-moe", "gpt-oss-tiny"])
def test_packed_equals_padded(preset):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset(preset))
    lengths = [5, 1, 9, 3]
    seqs = [torch.randint(0, 27, (n,)) for n in lengths]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    with torch.no_grad():
        packed, _ = model(torch.cat(seqs), cu_seqlens=cu)
        for n, (s, lo) in enumerate(zip(seqs, cu[:-1].tolist())):
            alone, _ = model(s[None])
            # same math, different attention kernel (varlen vs dense): fp32 rounding
            torch.testing.assert_close(packed[lo:lo + len(s)], alone[0], atol=1e-5, rtol=1e-5)


def test_inputs_embeds_equals_idx_and_hidden_states():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("names"))
    idx = torch.randint(0, 27, (2, 7))
    with torch.no_grad():
        logits, _ = model(idx)
        via_embeds, _ = model(inputs_embeds=model.wte(idx))
        hidden = model.hidden_states(idx)
    assert torch.equal(logits, via_embeds)
    assert hidden.shape == (2, 7, 64)
    assert torch.equal(model.lm_head(hidden), logits)
    cu = torch.tensor([0, 7, 14], dtype=torch.int32)           # the same two rows, packed
    with torch.no_grad():
        packed_hidden = model.hidden_states(inputs_embeds=model.wte(idx.reshape(-1)),
                                            cu_seqlens=cu, max_seqlen=7)
    # varlen vs dense attention kernels: fp32 rounding only
    torch.testing.assert_close(packed_hidden, hidden.reshape(14, 64), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset,prompt,new", [("microgpt", 1, 15), ("names-moe", 3, 20),
                                              ("gpt-oss-tiny", 5, 140)])
def test_greedy_cached_equals_uncached(preset, prompt, new):
    """gpt-oss-tiny's window-128 layers wrap their ring buffer after 128 positions."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset(preset, init_std=0.3))   # a peaked model: no near-ties
    idx = torch.randint(0, 27, (2, prompt))
    cached = model.generate(idx, new, temperature=0)
    recomputed = model.generate(idx, new, temperature=0, use_cache=False)
    assert cached.shape == (2, prompt + new)
    assert torch.equal(cached, recomputed)


def test_bad_inputs():
    model = GPT(GPTConfig.preset("microgpt"))
    with pytest.raises(TypeError, match="idx"):
        model(torch.zeros(1, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="idx"):
        model(torch.full((1, 3), 27))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 1, dtype=torch.int64), 16)
    with pytest.raises(ValueError, match="preset"):
        GPTConfig.preset("gpt-5")


@pytest.mark.parametrize("window,chunks", [(3, [5, 1, 1, 4, 1]), (None, [2, 1, 6, 3]),
                                           (4, [1] * 12)])
def test_kv_cache_chunks_equal_full_forward(window, chunks):
    """Prefill and decode in chunks against one causal pass; window 3 over 12 positions wraps
    the ring buffer, and a 4-token chunk after the wrap reads the ring in order."""
    from gptcore.nn import Attention
    torch.manual_seed(0)
    layer = Attention(32, 4, 2, window=window, sinks=True)
    torch.nn.init.normal_(layer.sinks)
    x = torch.randn(2, sum(chunks), 32)
    with torch.no_grad():
        full = layer(x)
        cache = layer.make_cache(2, sum(chunks))
        assert cache.capacity == (window or sum(chunks))
        steps, start = [], 0
        for n in chunks:
            steps.append(layer(x[:, start:start + n], cache))
            start += n
    # the same attention over the same keys in another order of chunks: fp32 rounding only
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_sampling_options():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("names", init_std=0.3))
    idx = torch.full((3, 1), 26)
    greedy = model.generate(idx, 10, temperature=0)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(idx, 10, temperature=0.7, top_k=1, generator=g), greedy)
    assert torch.equal(model.generate(idx, 10, temperature=0.7, top_p=1e-6, generator=g), greedy)
    a = model.generate(idx, 10, generator=torch.Generator().manual_seed(5))
    b = model.generate(idx, 10, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert torch.equal(a, b)                  # same draws with and without the cache
    stop = int(greedy[0, 3])
    out = model.generate(idx, 10, temperature=0, stop_token=stop)
    first = greedy[0].tolist().index(stop, 1)
    row = out[0].tolist()
    assert row[:first + 1] == greedy[0, :first + 1].tolist() and set(row[first:]) == {stop}


def test_from_microgpt_rejects_wrong_keys():
    sd = mg.init_state_dict(1)
    del sd["layer0.mlp_fc2"]
    with pytest.raises(ValueError, match="layer0.mlp_fc2"):
        GPT.from_microgpt(sd)


@pytest.mark.parametrize("backend", ["ref", "cpp"])
def test_fused_head_loss_equals_the_plain_one(backend):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("names", n_layer=1))
    idx = torch.randint(0, 27, (3, 12))
    targets = idx.roll(-1, 1).masked_fill(torch.rand(3, 12) < 0.2, -1)   # some ignored
    with gptcore.backend(backend):
        logits, plain = model(idx, targets)
        plain_grads = torch.autograd.grad(plain, list(model.parameters()))
        none, fused = model(idx, targets, return_logits=False)
        fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    assert logits.shape == (3, 12, 27) and none is None
    # one chunk of fp32 logits either way; the sums run in another order: fp32 rounding
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
