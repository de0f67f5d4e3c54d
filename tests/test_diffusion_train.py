"""The diffusion GPT end to end on CPU: presets, padded data, a few training steps through
gptcore.training.train lowering the loss, the bound, sampling, and checkpoints that say they are diffusion."""
import pytest
import torch

import gptcore
from gptcore.diffusion import train as diffusion_train
from gptcore.training import checkpoint, data
from gptcore.model.config import GPTConfig
from gptcore.model import GPT
from gptcore.training.config import TrainConfig
from gptcore.training.train import train

TOKENIZER = data.CharTokenizer.names()

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: tests/conftest.py


def small_config(preset="names-diffusion"):
    return diffusion_train.diffusion_config(preset, TOKENIZER, n_layer=1, d_model=32, d_ff=64)


@pytest.mark.parametrize("preset", ["names-diffusion", "names-diffusion-moe"])
def test_presets_are_bidirectional_with_a_mask_token_after_the_names_vocab(preset):
    config = GPTConfig.preset(preset)
    assert diffusion_train.is_diffusion(config) and not config.causal
    assert diffusion_train.mask_id(config) == TOKENIZER.vocab_size == 27
    assert config.block_size == 16                         # longest name (15) + one end token
    assert not diffusion_train.is_diffusion(GPTConfig.preset("names"))


def test_diffusion_config_rejects_an_autoregressive_preset():
    with pytest.raises(ValueError, match="preset"):
        diffusion_train.diffusion_config("names", TOKENIZER)


def test_attention_is_bidirectional_on_every_backend():
    model = GPT(small_config()).eval()
    x = torch.tensor([[0, 1, 2, 3, 26, 26]])
    later_changed = x.clone()
    later_changed[0, 4] = 5
    for name in ("ref", "cpp"):
        with gptcore.backend(name):
            a, _ = model(x)
            b, _ = model(later_changed)
        # a change at position 4 reaches position 0 only through bidirectional attention
        assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4, name
    with gptcore.backend("ref"):
        ref, _ = model(x)
    with gptcore.backend("cpp"):
        fast, _ = model(x)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)  # fp32 kernels, different order


def test_encode_padded_ends_every_row_and_counts_characters():
    seqs = diffusion_train.encode_padded(["ab", "", "abcdefgh"], TOKENIZER, 5)
    assert seqs.tolist() == [[0, 1, 26, 26, 26], [26, 26, 26, 26, 26], [0, 1, 2, 3, 26]]
    assert diffusion_train.num_characters(seqs, 26) == 3 + 1 + 5
    assert diffusion_train.decode(TOKENIZER, seqs[2]) == "abcd"


def test_batches_are_deterministic_and_cover_an_epoch():
    seqs = torch.arange(10)[:, None].repeat(1, 3)
    batches = diffusion_train.Batches(seqs, 4, seed=1)
    first_epoch = torch.cat([batches(s)["idx"][:, 0] for s in range(3)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert torch.equal(diffusion_train.Batches(seqs, 4, seed=1)(7)["idx"], batches(7)["idx"])


def test_a_few_training_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    train_docs, val_docs = data.split(data.load_names(), seed=0)
    config = small_config()
    model = GPT(config)
    train_seqs = diffusion_train.encode_padded(train_docs[:4096], TOKENIZER, config.block_size)
    val_seqs = diffusion_train.encode_padded(val_docs[:512], TOKENIZER, config.block_size)
    before = diffusion_train.validation_loss(model, val_seqs)
    summary = train(model, diffusion_train.Batches(train_seqs, 64), TrainConfig(steps=60, lr=1e-2),
                    objective=diffusion_train.DiffusionObjective(val_seqs, TOKENIZER.bos),
                    progress=False, out_dir=tmp_path)
    after = diffusion_train.validation_loss(model, val_seqs)
    # a uniform guess scores about 0.5 * ln 27 = 1.65 per token; 60 steps learn the end padding
    assert after < 0.8 * before, (before, after)
    assert summary["val_loss"] == pytest.approx(after, abs=1e-4)  # the summary rounds to 4 places
    loaded, _ = checkpoint.load_model(tmp_path)
    assert diffusion_train.is_diffusion(loaded.config)
    torch.testing.assert_close(loaded(val_seqs[:4])[0], model(val_seqs[:4])[0])


def test_sampling_a_gpt_leaves_no_mask_and_decodes_names():
    model = GPT(small_config())
    names = diffusion_train.sample(model, TOKENIZER, 8, steps=4, block_length=7, temperature=1.0,
                                   prompt="an", generator=torch.Generator().manual_seed(0))
    assert len(names) == 8
    assert all(n.startswith("an") and set(n) <= set("abcdefghijklmnopqrstuvwxyz") for n in names)


def test_validation_bound_is_reproducible_and_per_character():
    model = GPT(small_config())
    seqs = diffusion_train.encode_padded(["anna", "bob", "christopher"], TOKENIZER, 16)
    first = diffusion_train.validation_bound(model, seqs, TOKENIZER.bos, num_samples=3, seed=5)
    assert first == diffusion_train.validation_bound(model, seqs, TOKENIZER.bos, num_samples=3,
                                                     seed=5)
    bound, stderr = first
    assert stderr > 0
    # an untrained model predicts near-uniformly over 27 tokens, and the bound counts all 16
    # positions of each row against only 4 + 3 + 11 + 3 characters: far above ln 27 = 3.3
    assert bound > 3.3


def test_default_blocks_fit_an_odd_generated_length():
    model = GPT(small_config())
    # prompt "a" leaves 15 tokens: blocks of 2 do not divide them, so the default falls back to 1
    names = diffusion_train.sample(model, TOKENIZER, 3, prompt="a",
                                   generator=torch.Generator().manual_seed(0))
    assert len(names) == 3 and all(n.startswith("a") for n in names)
