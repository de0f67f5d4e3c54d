"""gptcore.training.data and gptcore.training.train: the names data, tokenizers, split, batches; the training
loop on the ref and fast backends, checkpoints and resuming."""
import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch

import gptcore
from gptcore import GPT, GPTConfig
from gptcore.training import checkpoint, data
from gptcore.training.config import TrainConfig
from gptcore.training.context import Local
from gptcore.training.objective import NextToken, Objective, next_token
from gptcore.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: tests/conftest.py


def test_names_data():
    names = data.load_names()
    assert len(names) > 25_000
    assert all(n.isascii() and n.isalpha() and n.islower() for n in names)
    assert len(set(names)) == len(names)


def test_char_tokenizer_is_microgpts():
    tok = data.CharTokenizer.names()
    assert tok.encode("abz") == [0, 1, 25] and tok.bos == 26 and tok.vocab_size == 27
    assert tok.decode([26, 4, 12, 12, 0, 26]) == "emma"
    assert data.encode_documents(["emma"], tok, 16) == [[26, 4, 12, 12, 0, 26]]
    assert data.encode_documents(["abcdefghij"], tok, 4) == [[26, 0, 1, 2, 3]]
    with pytest.raises(ValueError, match="text"):
        tok.encode("Emma")


def test_bpe_tokenizer_round_trip():
    docs = ["the cat sat on the mat", "a dog, a log", "émile zola"] * 20
    tok = data.BPETokenizer.train(docs, vocab_size=300)
    assert tok.vocab_size <= 300 and tok.bos == 0
    for doc in docs[:3]:
        ids = tok.encode(doc)
        assert tok.bos not in ids and tok.decode([tok.bos] + ids) == doc
    again = data.tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode(docs[0]) == tok.encode(docs[0])


def test_split_is_deterministic_and_disjoint():
    names = data.load_names()
    train_a, val_a = data.split(names, 0.1, seed=3)
    train_b, val_b = data.split(names, 0.1, seed=3)
    assert (train_a, val_a) == (train_b, val_b)
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == len(names)
    assert data.split(names, 0.1, seed=4)[1] != val_a


def test_batches_packed_and_padded():
    seqs = [[26, 1, 2, 26], [26, 5, 26], [26, 7, 8, 9, 26]]
    packed = data.packed_batch(seqs)
    assert packed["idx"].tolist() == [26, 1, 2, 26, 5, 26, 7, 8, 9]
    assert packed["targets"].tolist() == [1, 2, 26, 5, 26, 7, 8, 9, 26]
    assert packed["cu_seqlens"].tolist() == [0, 3, 5, 9] and packed["max_seqlen"] == 4
    assert packed["cu_seqlens"].dtype == torch.int32
    padded = data.padded_batch(seqs)
    assert padded["targets"].tolist()[1] == [5, 26, -1, -1]
    batches = data.Batches(seqs * 5, 4, seed=1)
    assert torch.equal(batches(7)["idx"], data.Batches(seqs * 5, 4, seed=1)(7)["idx"])
    # two ranks of a data-parallel run see disjoint halves of the same global batch
    r0 = data.Batches(list(range(8)), 2, seed=0, rank=0, world_size=2)
    r1 = data.Batches(list(range(8)), 2, seed=0, rank=1, world_size=2)
    order = data.Batches(list(range(8)), 4, seed=0)._order(0)
    assert [r0._order(0)[i] for i in (0, 1)] + [r1._order(0)[i] for i in (2, 3)] == order[:4]


def _names_setup(n_docs=2000):
    tok = data.CharTokenizer.names()
    train_docs, val_docs = data.split(data.load_names()[:n_docs], 0.1, seed=0)
    return data.encode_documents(train_docs, tok, 16), data.encode_documents(val_docs, tok, 16)


def test_ref_and_fast_backend_train_the_same():
    """The kernels change the speed, not the algorithm: 30 steps of microgpt's recipe."""
    losses = {}
    for backend in ("ref", "cpp"):
        seqs, _ = _names_setup()
        torch.manual_seed(0)
        model = GPT(GPTConfig.preset("microgpt"))
        recorded = []

        def loss_fn(m, batch):
            _, loss = m(batch["idx"], batch["targets"])
            recorded.append(loss.item())
            return loss
        with gptcore.backend(backend):
            train(model, data.Batches(seqs, 1, packed=False, seed=0),
                  TrainConfig(steps=30, lr=0.01, betas=(0.85, 0.99), schedule="linear",
                              grad_clip=0), objective=Objective(loss_fn), progress=False)
        losses[backend] = torch.tensor(recorded)
    diff = (losses["ref"] - losses["cpp"]).abs().max().item()
    print(f"max per-step loss difference ref vs cpp over 30 steps: {diff:.2e}")
    # fp32 attention in two summation orders differs by ~1e-7 per step; Adam divides by
    # sqrt(v), which can amplify it; measured 4.8e-7 over 30 steps, 1e-5 leaves 20x margin.
    assert diff < 1e-5, diff
    assert losses["ref"][-5:].mean() < losses["ref"][:5].mean()    # and it does learn


def test_grad_accum_equals_the_large_batch():
    """grad_accum micro-batches of equal length give the step of their concatenation. Adam's
    eps = 1 makes the update follow the gradient's scale, so a sum where a mean is due fails."""
    seqs = torch.randint(0, 27, (12, 9))
    halves = [{"idx": seqs[i:i + 2, :-1], "targets": seqs[i:i + 2, 1:]} for i in range(0, 12, 2)]
    recipe = TrainConfig(steps=3, lr=0.05, eps=1.0, grad_clip=0, schedule="constant")
    states = []
    for accum, batches in ((2, lambda i: halves[i]),
                           (1, lambda i: {k: torch.cat([halves[2 * i][k], halves[2 * i + 1][k]])
                                          for k in ("idx", "targets")})):
        torch.manual_seed(0)
        model = GPT(GPTConfig.preset("microgpt"))
        summary = train(model, batches, dataclasses.replace(recipe, grad_accum=accum),
                        progress=False)
        states.append((model.state_dict(), summary))
    (a, sa), (b, sb) = states
    # fp32 sums in another order (two half means vs one mean): ~1e-7 relative per step
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert sa["tokens"] == sb["tokens"] == 3 * 4 * 8
    assert sa["train_loss"] == pytest.approx(sb["train_loss"], rel=1e-5)


def test_checkpoint_resume_is_exact(tmp_path):
    """A run killed after step 7 (checkpoint every 3 steps) and resumed ends exactly where an
    uninterrupted run ends."""
    seqs, _ = _names_setup()
    recipe = TrainConfig(steps=12, lr=3e-3, warmup=3, schedule="cosine", seed=0)
    config = GPTConfig.preset("names", n_layer=1, d_model=32)
    torch.manual_seed(0)
    straight = GPT(config)
    train(straight, data.Batches(seqs, 8, seed=0), recipe, progress=False)

    calls = []

    def crashing_loss(model, batch):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return next_token(model, batch)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(GPT(config), data.Batches(seqs, 8, seed=0),
              dataclasses.replace(recipe, checkpoint_every=3), out_dir=tmp_path,
              objective=Objective(crashing_loss), progress=False)
    assert json.loads((checkpoint.resolve(tmp_path) / "state.json").read_text())["step"] == 6
    torch.manual_seed(1)
    fresh = GPT(config)              # different init: everything must come from the checkpoint
    summary = train(fresh, data.Batches(seqs, 8, seed=0), recipe, out_dir=tmp_path,
                    progress=False)
    assert summary["steps"] == 12
    for (name, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    loaded, _ = checkpoint.load_model(tmp_path)
    for a, b in zip(loaded.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 12


def test_moe_loss_optimises_aux_and_logs_cross_entropy():
    seqs, _ = _names_setup(200)
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("names-moe", n_layer=2))
    batch = data.Batches(seqs, 8, seed=0)(0)
    optimised, logged = Local().loss(model, NextToken(), batch)
    _, ce = model(batch["idx"], batch["targets"], cu_seqlens=batch["cu_seqlens"])
    assert torch.equal(logged, ce)
    aux = model.aux_loss()
    assert aux > 0 and torch.allclose(optimised, ce + aux)


def test_tied_weights_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("names", n_layer=1, tie_embeddings=True))
    assert model.lm_head.weight is model.wte.weight
    checkpoint.save(tmp_path, model)
    loaded, _ = checkpoint.load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.wte.weight
    assert torch.equal(loaded.wte.weight, model.wte.weight)
    assert loaded.num_params() == model.num_params()


def test_lr_schedule():
    from gptcore.training.train import lr_factor
    # microgpt: lr_t = lr * (1 - step / num_steps), no warm-up
    assert [lr_factor(s / 1000, s, 0, "linear", 0.0) for s in (0, 250, 999)] == \
        [1.0, 0.75, 1 - 999 / 1000]
    assert [lr_factor(0.0, s, 4, "cosine", 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(1.0, 50, 4, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(0.5, 50, 4, "cosine", 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps: expected a positive int, got 0"),
    ("lr", -1.0, "lr: expected a positive number, got -1.0"),
    ("schedule", "step", "schedule: expected one of"),
    ("keep", 0, "keep: expected a positive int or None, got 0"),
    ("checkpoint_every", 1.5, "checkpoint_every: expected a positive int or None, got 1.5"),
    ("grad_accum", 0, "grad_accum: expected a positive int, got 0"),
])
def test_train_config_names_a_bad_field(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{field: value})


def test_the_loop_imports_no_distributed_code():
    """gptcore.training.train runs one process without gptcore.parallel (the context is a
    plug-in): importing it must not import the torchrun machinery, so no import cycle."""
    code = ("import sys, gptcore.training.train; "
            "print(sorted(m for m in sys.modules if m.startswith('gptcore.parallel')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

