"""`gptcore export`: a gptcore GPT as transformers' Llama / Mixtral (logits and greedy tokens
equal to gptcore's) and as GGUF (read back with the `gguf` package, and its tensors run through
a plain numpy forward with llama.cpp's interleaved rope, giving gptcore's logits)."""
import json
import math

import numpy as np
import pytest
import torch

from gptcore import GPT, GPTConfig, cli
from gptcore.export import gguf_file, hf
from gptcore.training import data

# fp32 on both sides, the same math in a different order (fused kv / fc1, kernels vs eager):
# logits of size ~3 agree to ~1e-6; 1e-4 leaves room and still catches any wrong weight
ATOL = 1e-4


def _model(**overrides):
    torch.manual_seed(0)
    config = dict(vocab_size=37, block_size=32, n_layer=2, d_model=32, n_head=4, n_kv_head=2,
                  d_ff=48, mlp="swiglu", pos="rope", rope_theta=500.0)
    model = GPT(GPTConfig(**{**config, **overrides})).eval()
    with torch.no_grad():                  # larger weights than the init: differences show
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("norm.weight") else 0.0, 0.3)
    return model


CASES = {"llama": {}, "llama-tied-mha-no-gain": dict(n_kv_head=None, tie_embeddings=True,
                                                      norm_gain=False),
         "mixtral": dict(n_experts=4, top_k=2, d_ff=24)}


@pytest.mark.parametrize("case", CASES)
def test_transformers_logits_and_greedy_tokens_equal_gptcores(case, tmp_path):
    from transformers import AutoModelForCausalLM
    model = _model(**CASES[case])
    hf.to_hf(model, tmp_path / "out")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert loaded.config.model_type == case.split("-")[0]
    idx = torch.randint(37, (3, 29), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx)[0], loaded(idx).logits
    assert (ours - theirs).abs().max() < ATOL, (ours - theirs).abs().max()
    prompt = idx[:1, :5]
    ours = model.generate(prompt, 20, temperature=0)
    theirs = loaded.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("overrides, field", [
    (dict(pos="learned"), "pos"), (dict(mlp="gelu"), "mlp"), (dict(sinks=True), "sinks"),
    (dict(windows=(8, None)), "windows"), (dict(bias=True), "bias"),
    (dict(causal=False), "causal"), (dict(embed_norm=True), "embed_norm"),
    (dict(n_experts=4, moe_scoring="topk_softmax"), "moe_scoring"),
])
def test_what_llama_cannot_compute_is_refused_by_name(overrides, field, tmp_path):
    with pytest.raises(ValueError, match=f"--ckpt: expected .*{field}"):
        hf.to_hf(_model(**overrides), tmp_path / "out")
    with pytest.raises(ValueError, match=f"--ckpt: expected .*{field}"):
        gguf_file.to_gguf(_model(**overrides), tmp_path / "out.gguf")
    assert not list(tmp_path.iterdir())                   # nothing half-written


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_the_exported_tokenizer_gives_gptcores_ids(kind, tmp_path):
    from transformers import AutoTokenizer
    text = "ROMEO:\nIs it so?  Then I defy you, stars!\n" * 20
    tok = data.CharTokenizer(sorted(set(text))) if kind == "char" else \
        data.BPETokenizer.train([text], 300)
    hf.to_hf(_model(vocab_size=tok.vocab_size), tmp_path / "out", tokenizer=tok)
    loaded = AutoTokenizer.from_pretrained(tmp_path / "out")
    sample = "Then I defy you,\n ROMEO!"
    ids = loaded(sample, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(sample)
    assert loaded.decode(ids) == sample and loaded.bos_token_id == tok.bos


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _gguf_forward(path, ids):
    """Logits (T, V) from a GGUF file's tensors: llama's forward in float64 numpy, RoPE on
    interleaved pairs (x_2i, x_2i+1) as llama.cpp's "llama" rope applies it."""
    import gguf
    reader = gguf.GGUFReader(path)
    meta = {f.name: f.contents() for f in reader.fields.values()}
    w = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    H, Hkv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    D, eps = meta["llama.attention.key_length"], meta["llama.attention.layer_norm_rms_epsilon"]
    T = len(ids)
    angles = np.arange(T)[:, None] * meta["llama.rope.freq_base"] ** (-np.arange(0, D, 2) / D)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]          # (T, 1, D/2)

    def rope(x):                                                         # (T, heads, D)
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
        return out
    x = w["token_embd.weight"][ids]
    for i in range(meta["llama.block_count"]):
        p = f"blk.{i}."
        h = _rms(x, w[p + "attn_norm.weight"], eps)
        q = rope((h @ w[p + "attn_q.weight"].T).reshape(T, H, D))
        k = rope((h @ w[p + "attn_k.weight"].T).reshape(T, Hkv, D)).repeat(H // Hkv, axis=1)
        v = (h @ w[p + "attn_v.weight"].T).reshape(T, Hkv, D).repeat(H // Hkv, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(D)
        scores[:, np.triu(np.ones((T, T), bool), 1)] = -np.inf
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", probs, v).reshape(T, H * D) @ \
            w[p + "attn_output.weight"].T
        h = _rms(x, w[p + "ffn_norm.weight"], eps)
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = _rms(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T


@pytest.mark.parametrize("overrides", [{}, dict(tie_embeddings=True)])
def test_gguf_reads_back_and_computes_gptcores_logits(overrides, tmp_path):
    import gguf
    model = _model(**overrides)
    tok = {"kind": "char", "chars": "abc"}
    gguf_file.to_gguf(model, tmp_path / "m.gguf", tokenizer=tok, name="tiny")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    meta = {f.name: f.contents() for f in reader.fields.values()}
    assert meta["general.architecture"] == "llama" and meta["general.name"] == "tiny"
    assert (meta["llama.block_count"], meta["llama.embedding_length"],
            meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"],
            meta["llama.context_length"], meta["llama.feed_forward_length"]) == (2, 32, 4, 2,
                                                                               32, 48)
    assert json.loads(meta["gptcore.tokenizer"]) == tok
    tensors = {t.name: t for t in reader.tensors}
    assert ("output.weight" in tensors) == (not overrides)
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert np.array_equal(tensors["blk.1.attn_v.weight"].data,
                          model.blocks[1].attn.kv_proj.weight[16:].detach().numpy())
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0].double().numpy()
    assert np.abs(_gguf_forward(tmp_path / "m.gguf", ids) - ours).max() < ATOL


def test_gguf_experts_are_llama_cpps_split_layout(tmp_path):
    import gguf
    model = _model(n_experts=4, top_k=2, d_ff=24)
    gguf_file.to_gguf(model, tmp_path / "moe.gguf")
    reader = gguf.GGUFReader(tmp_path / "moe.gguf")
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    meta = {f.name: f.contents() for f in reader.fields.values()}
    assert (meta["llama.expert_count"], meta["llama.expert_used_count"]) == (4, 2)
    gate_up = model.blocks[0].ffn.gate_up_proj.detach().numpy()          # (E, 2I, H)
    assert np.array_equal(tensors["blk.0.ffn_gate_exps.weight"], gate_up[:, :24])
    assert np.array_equal(tensors["blk.0.ffn_up_exps.weight"], gate_up[:, 24:])
    assert np.array_equal(tensors["blk.0.ffn_down_exps.weight"],
                          model.blocks[0].ffn.down_proj.detach().numpy())
    assert np.array_equal(tensors["blk.0.ffn_gate_inp.weight"],
                          model.blocks[0].ffn.router.weight.detach().numpy())


def test_export_command(tmp_path, capsys):
    threads = torch.get_num_threads()
    book = tmp_path / "book.txt"
    book.write_text("Now is the winter of our discontent\n" * 40)
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "shakespeare-char", "--data", str(book), "--n-layer",
                     "1", "--d-model", "32", "--n-head", "2", "--d-ff", "48", "--block-size",
                     "16", "--batch-size", "4", "--steps", "2", "--threads", "1", "--quiet",
                     "--out", str(run)]) == 0
    torch.set_num_threads(threads)
    capsys.readouterr()
    assert cli.main(["export", "--ckpt", str(run), "--to", "hf", str(tmp_path / "hf")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["family"] == "llama"
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert cli.main(["export", "--ckpt", str(run), "--to", "gguf", str(tmp_path / "m.gguf")]) == 0
    assert (tmp_path / "m.gguf").is_file()
    capsys.readouterr()
    assert cli.main(["train", "--preset", "microgpt", "--steps", "1", "--quiet", "--out",
                     str(tmp_path / "micro")]) == 0
    torch.set_num_threads(threads)
    capsys.readouterr()
    for argv, expected in [
            (["--ckpt", str(run), "--to", "hf", str(tmp_path / "hf")],
             "gptcore export: OUT: expected a path that does not exist yet"),
            (["--ckpt", str(tmp_path / "micro"), "--to", "hf", str(tmp_path / "x")],
             "gptcore export: --ckpt: expected a model Llama/Mixtral computes (pos='rope'), "
             "got pos='learned'"),
            (["--ckpt", str(tmp_path / "none"), "--to", "gguf", str(tmp_path / "y.gguf")],
             "gptcore export: --ckpt: expected a checkpoint directory")]:
        assert cli.main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(expected), err
