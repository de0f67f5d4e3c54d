"""gptcore.patch(model, loss=True): a dense causal LM's loss through gptcore.linear_cross_entropy
gives transformers' loss and gradients (ignored labels, given shift_labels, num_items_in_batch)
without any (tokens, vocab) tensor; other calls run the model's own forward; families it does
not cover are refused before anything is patched; unpatch restores."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gptcore

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from test_hf import V, _tiny  # noqa: E402

DENSE = ("llama", "mistral", "qwen2", "qwen3")
# fp32 cross-entropy over 22 tokens, two summation orders (chunked vs whole logits): rounding only.
LOSS_TOL = dict(rtol=1e-5, atol=1e-6)


def _model(name):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(_tiny(name), attn_implementation="eager")


def _pair(name):
    eager, ours = _model(name), _model(name)
    ours.load_state_dict(eager.state_dict())
    gptcore.patch(ours, attention=False, norms=False, loss=True)
    return eager.train(), ours.train()


def _labels(B=2, S=11):
    labels = torch.randint(0, V, (B, S))
    labels[0, :3] = -100                               # a prompt that is not trained on
    return labels


class _Largest(TorchDispatchMode):
    """The largest number of elements any op produced inside the block."""
    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("name", DENSE)
def test_loss_and_gradients_match_transformers(name):
    eager, ours = _pair(name)
    ids, labels = torch.randint(0, V, (2, 11)), _labels()
    want, got = eager(ids, labels=labels), ours(ids, labels=labels)
    assert got.logits is None
    torch.testing.assert_close(got.loss, want.loss, **LOSS_TOL)
    want.loss.backward()
    got.loss.backward()
    for (n, a), b in zip(ours.named_parameters(), eager.parameters()):
        # fp32 gradients through two layers and the loss: rounding of O(1e-2) sums.
        torch.testing.assert_close(a.grad, b.grad, atol=2e-5, rtol=2e-4, msg=lambda m: f"{n}: {m}")


def test_num_items_in_batch_and_shift_labels_as_transformers():
    eager, ours = _pair("llama")
    ids, labels = torch.randint(0, V, (2, 11)), _labels()
    total = torch.tensor(37)                           # tokens of the whole accumulated batch
    torch.testing.assert_close(ours(ids, labels=labels, num_items_in_batch=total).loss,
                               eager(ids, labels=labels, num_items_in_batch=total).loss,
                               **LOSS_TOL)
    shift = _labels()
    torch.testing.assert_close(ours(ids, labels=labels, shift_labels=shift).loss,
                               eager(ids, labels=labels, shift_labels=shift).loss,
                               **LOSS_TOL)


def test_no_tensor_of_tokens_by_vocab():
    """More tokens than the hidden width, so the logits (B*S, V) outgrow every weight and its
    gradient (at most V x hidden)."""
    vocab, B, S = 2000, 2, 48
    torch.manual_seed(0)
    models = [transformers.AutoModelForCausalLM.from_config(
        _tiny("llama", vocab_size=vocab), attn_implementation="eager") for _ in range(2)]
    gptcore.patch(models[1], attention=False, norms=False, loss=True)
    ids = torch.randint(0, vocab, (B, S))
    largest = []
    for model in models:
        with _Largest() as seen:
            model(ids, labels=ids).loss.backward()
        largest.append(seen.largest)
    assert largest[0] >= B * S * vocab                 # the check can fail: eager has them
    assert largest[1] < B * S * vocab, largest


def test_other_calls_run_the_models_own_forward():
    eager, ours = _pair("llama")
    ids = torch.randint(0, V, (1, 7))
    torch.testing.assert_close(ours(ids).logits, eager(ids).logits, rtol=0, atol=0)
    loss, logits = ours(ids, labels=ids, return_dict=False)[:2]     # a tuple: transformers' path
    assert logits.shape == (1, 7, V)
    torch.testing.assert_close(loss, eager(ids, labels=ids).loss, rtol=0, atol=0)
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.eval().generate(ids, **kw), eager.eval().generate(ids, **kw))


def test_unsupported_families_are_refused_before_anything_changes():
    model = _model("gemma2")
    with pytest.raises(ValueError, match="loss: gptcore's LM head \\+ loss covers .* got "
                                         "Gemma2ForCausalLM"):
        gptcore.patch(model, loss=True)
    assert model.config._attn_implementation == "eager"
    assert not hasattr(model, "_gptcore_unpatched")


def test_unpatch_restores_the_models_forward():
    eager, ours = _pair("qwen3")
    assert "forward" in vars(ours)
    gptcore.unpatch(ours)
    assert "forward" not in vars(ours)
    ids = torch.randint(0, V, (1, 7))
    torch.testing.assert_close(ours(ids, labels=ids).logits, eager(ids, labels=ids).logits,
                               rtol=0, atol=0)
