"""A masked-diffusion GPT on documents (one per line, e.g. the names): fixed-length sequences padded
with the end token, the LLaDA loss as a gptcore.training objective, the validation bound in nats per
character, and sampling documents back out. The network is a gptcore.GPT with causal=False whose
last token id is the mask token (GPTConfig.extra["objective"] == "diffusion", see the
names-diffusion presets); DiffusionPreset is the objective plug-in `gptcore train` uses."""
import torch

from gptcore import diffusion
from gptcore.model.config import GPTConfig
from gptcore.training.objective import Objective

OBJECTIVE = "diffusion"
BOUND_SAMPLES = 8        # Monte-Carlo draws per validation sequence for val_nll_bound


def is_diffusion(config):
    """True for a GPTConfig made for masked diffusion (a diffusion preset, or its checkpoint)."""
    return isinstance(config, GPTConfig) and config.extra.get("objective") == OBJECTIVE


def mask_id(config):
    """The mask token: the last id of a diffusion config's vocabulary (tokenizer vocab + 1)."""
    return config.vocab_size - 1


def diffusion_config(preset, tokenizer, **overrides):
    """The preset sized for `tokenizer`: its vocabulary plus the mask token, bidirectional."""
    config = GPTConfig.preset(preset, vocab_size=tokenizer.vocab_size + 1, **overrides)
    if not is_diffusion(config) or config.causal:
        raise ValueError(f"preset: expected a bidirectional diffusion preset "
                         f"(extra['objective'] == 'diffusion'), got {preset!r}")
    return config


def encode_padded(docs, tokenizer, length):
    """(N, length) int64: each document's tokens, then the end token (the tokenizer's BOS) up to
    `length`; a document with `length` or more tokens is cut to length - 1 so it still ends. The
    model learns to predict the end tokens too, so sampling decides the length."""
    end = tokenizer.bos
    out = torch.full((len(docs), length), end, dtype=torch.int64)
    for row, doc in enumerate(docs):
        ids = tokenizer.encode(doc)[:length - 1]
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def num_characters(sequences, end):
    """Units of the per-character figures: every token up to and including the first end token
    of each row (an AR model on [BOS] + doc + [BOS] predicts exactly these)."""
    is_end = sequences == end
    first_end = torch.where(is_end.any(1), is_end.int().argmax(1), sequences.shape[1] - 1)
    return int((first_end + 1).sum())


class Batches:
    """step -> {"idx": (batch_size, L)} drawn from sequences (N, L) without replacement, a fresh
    seeded permutation each epoch: deterministic in (seed, step), so a resumed run sees the same data."""

    def __init__(self, sequences, batch_size, *, seed=0, device=None):
        if sequences.shape[0] == 0:
            raise ValueError("sequences: expected at least one sequence, got none")
        self.sequences, self.batch_size, self.seed, self.device = sequences, batch_size, seed, device
        self._epoch, self._order = None, None

    def __call__(self, step):
        n = self.sequences.shape[0]
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        rows = torch.empty_like(positions)
        for epoch in positions.div(n, rounding_mode="floor").unique().tolist():
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._epoch, self._order = epoch, torch.randperm(n, generator=g)
            here = positions.div(n, rounding_mode="floor") == epoch
            rows[here] = self._order[positions[here] % n]
        return {"idx": self.sequences[rows].to(self.device)}


@torch.no_grad()
def validation_loss(model, sequences, *, batch_size=512, seed=0):
    """The LLaDA loss (the training objective) over sequences (N, L), with a fixed masking seed so
    successive evaluations compare; a batch-size-weighted mean."""
    generator = torch.Generator(device=sequences.device).manual_seed(seed)
    total = 0.0
    for begin in range(0, sequences.shape[0], batch_size):
        chunk = sequences[begin:begin + batch_size]
        loss = diffusion.diffusion_loss(model, chunk, mask_id(model.config), generator=generator)
        total += loss.item() * chunk.shape[0]
    return total / sequences.shape[0]


class DiffusionObjective(Objective):
    """The LLaDA loss on the training batches, its fixed-seed mean on val_sequences (N, L) as the
    validation loss, and the NLL bound (validation_bound) in the summary."""

    def __init__(self, val_sequences, end):
        super().__init__(lambda model, batch: diffusion.diffusion_loss(
            model, batch["idx"], mask_id(getattr(model, "module", model).config)))
        self.val_sequences, self.end = val_sequences, end

    def units(self, batch):
        return batch["idx"].shape[0]

    def evaluate(self, model):
        return validation_loss(model, self.val_sequences)

    def report(self, model):
        bound, stderr = validation_bound(model, self.val_sequences, self.end,
                                         num_samples=BOUND_SAMPLES)
        return {"val_nll_bound": round(bound, 4), "val_nll_bound_stderr": round(stderr, 4)}


class DiffusionPreset:
    """The objective plug-in of the diffusion presets (gptcore.training.recipes)."""
    name = OBJECTIVE
    supports_parallel = False
    sampler = "gptcore.diffusion.cli:sample_diffusion"

    @staticmethod
    def model_config(preset, tokenizer, meta):
        return diffusion_config(preset, tokenizer, extra={"objective": OBJECTIVE, **meta})

    @staticmethod
    def encode(docs, tokenizer, block_size):
        return encode_padded(docs, tokenizer, block_size)

    @staticmethod
    def batches(seqs, recipe, *, batch_size, seed, rank, world_size, device):
        return Batches(seqs, batch_size, seed=seed, device=device)

    @staticmethod
    def objective(val_seqs, tokenizer, device):
        return DiffusionObjective(val_seqs, tokenizer.bos)


@torch.no_grad()
def validation_bound(model, sequences, end, *, num_samples=8, batch_size=512, seed=0):
    """(bound, standard error) on the NLL in nats per character (num_characters) of sequences."""
    generator = torch.Generator(device=sequences.device).manual_seed(seed)
    return diffusion.nll_bound(model, sequences, num_characters(sequences, end),
                               mask_id(model.config), num_samples=num_samples,
                               batch_size=batch_size, generator=generator)


def decode(tokenizer, row):
    """Text of one generated row: the tokens before the first end token."""
    ids = row.tolist()
    if tokenizer.bos in ids:
        ids = ids[:ids.index(tokenizer.bos)]
    return tokenizer.decode(ids)


# Low-confidence remasking over a whole canvas is mode-seeking (it commits the likeliest tokens
# first and lands on the commonest names); short semi-autoregressive blocks keep variety, and
# blocks of 2 come close to left-to-right's share of valid, novel names (docs/diffusion.md).
DEFAULT_BLOCK_LENGTH = 2
DEFAULT_TEMPERATURE = 1.0


@torch.no_grad()
def sample(model, tokenizer, n, *, steps=None, block_length=None,
           temperature=DEFAULT_TEMPERATURE, remasking="low_confidence", prompt="", generator=None):
    """n documents: the prompt's tokens then block_size - len(prompt) generated tokens, cut at
    the first end token. steps defaults to the generated length (one token per step),
    block_length to DEFAULT_BLOCK_LENGTH (1 when that does not divide the generated length)."""
    model.eval()
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt)
    gen_length = model.config.block_size - len(ids)
    if gen_length < 1:
        raise ValueError(f"prompt: expected fewer than block_size={model.config.block_size} "
                         f"tokens, got {len(ids)}")
    prompt_ids = torch.tensor([ids] * n, dtype=torch.int64, device=device).view(n, len(ids))
    if block_length is None:
        block_length = DEFAULT_BLOCK_LENGTH if gen_length % DEFAULT_BLOCK_LENGTH == 0 else 1
    out = diffusion.diffusion_generate(model, prompt_ids, gen_length, steps or gen_length,
                                       block_length, temperature, remasking,
                                       mask_id=mask_id(model.config), generator=generator)
    return [decode(tokenizer, row) for row in out]
