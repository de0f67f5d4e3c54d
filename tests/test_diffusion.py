"""gptcore.diffusion against hand-written computations, with a tiny bidirectional stand-in network:
the LLaDA loss, the masking process, the linear transfer schedule, the sampler's invariants and the
Monte-Carlo NLL bound (checked against exact enumeration over every mask pattern)."""
import itertools
import math

import pytest
import torch
from torch import nn

from gptcore import diffusion

V = 6            # real tokens 0..4, mask token 5
MASK = V - 1


class StandIn(nn.Module):
    """Every position sees every other one (mean of all embeddings) and its own: a bidirectional
    logits_fn small enough to enumerate by hand."""

    def __init__(self, vocab=V, length=8, width=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width))
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)
        self.calls = []

    def forward(self, x):                                  # x (B, L) -> logits (B, L, V)
        self.calls.append(x.clone())
        h = self.embed(x) + self.position[: x.shape[1]]
        h = torch.tanh(h + self.mix(h.mean(1, keepdim=True)))
        return self.head(h)


def test_llada_loss_matches_per_position_loop():
    torch.manual_seed(1)
    B, L = 3, 5
    logits = torch.randn(B, L, V)
    targets = torch.randint(0, MASK, (B, L))
    masked = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    p_mask = torch.tensor([0.4, 0.001, 0.9])
    expected = 0.0
    for b in range(B):
        for i in range(L):
            if masked[b, i]:
                row = [float(v) for v in logits[b, i]]
                log_z = math.log(sum(math.exp(v) for v in row))
                expected += (log_z - row[targets[b, i]]) / float(p_mask[b])
    expected /= B * L
    got = diffusion.llada_loss(logits, targets, masked, p_mask).item()
    assert got == pytest.approx(expected, rel=1e-5)  # float32 CE against a float64 loop


def test_llada_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="p_mask"):
        diffusion.llada_loss(torch.zeros(2, 3, V), torch.zeros(2, 3, dtype=torch.long),
                             torch.zeros(2, 3, dtype=torch.bool), torch.ones(3))


def test_forward_mask_probability_is_never_zero_and_masks_only_masked():
    x = torch.randint(0, MASK, (20000, 7), generator=torch.Generator().manual_seed(0))
    noisy, masked, p_mask = diffusion.forward_mask(x, MASK, generator=torch.Generator().manual_seed(1))
    assert p_mask.min().item() >= diffusion.MASK_EPS * (1 - 1e-6)  # float32 rounding of eps only
    assert p_mask.max().item() <= 1.0
    assert torch.equal(noisy == MASK, masked)
    assert torch.equal(noisy[~masked], x[~masked])
    # the masked fraction follows p_mask: E[masked] = E[p_mask] = (1 - eps) / 2 + eps
    expected = (1 - diffusion.MASK_EPS) / 2 + diffusion.MASK_EPS
    assert masked.float().mean().item() == pytest.approx(expected, abs=0.01)  # ~7 sigma at n=140k


def test_forward_mask_at_time_zero_still_masks_with_eps(monkeypatch):
    real_rand = torch.rand

    def rand_with_t_zero(*size, **kwargs):
        out = real_rand(*size, **kwargs)
        return torch.zeros_like(out) if out.dim() == 1 else out   # t = 0 for every sequence
    monkeypatch.setattr(torch, "rand", rand_with_t_zero)
    _, _, p_mask = diffusion.forward_mask(torch.zeros(4, 3, dtype=torch.long), MASK)
    assert torch.allclose(p_mask, torch.full((4,), diffusion.MASK_EPS))  # exactly eps in float32


def test_transfer_schedule_is_the_even_split_with_remainder_first():
    got = diffusion.transfer_schedule(torch.tensor([10, 3, 0, 7, 4]), 4)
    expected = [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0], [2, 2, 2, 1], [1, 1, 1, 1]]
    assert got.tolist() == expected


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("gen_length,steps,block_length", [(8, 8, 8), (8, 4, 4), (6, 3, 2),
                                                           (7, 3, 7), (5, 5, 1)])
def test_sampler_commits_the_schedule_and_never_changes_a_commit(remasking, temperature, gen_length,
                                                                 steps, block_length):
    model = StandIn(length=2 + gen_length)
    prompt = torch.tensor([[1, 2], [3, 0], [4, 4]])
    out = diffusion.diffusion_generate(model, prompt, gen_length, steps, block_length, temperature,
                                       remasking, mask_id=MASK,
                                       generator=torch.Generator().manual_seed(0))
    states = model.calls + [out]
    assert len(model.calls) == steps                       # one batched forward per step
    assert not (out == MASK).any()
    assert torch.equal(out[:, :2], prompt)
    per_block = steps // (gen_length // block_length)
    for s in range(steps):
        before, after = states[s], states[s + 1]
        block = s // per_block
        start, end = 2 + block * block_length, 2 + (block + 1) * block_length
        committed = (before == MASK) & (after != MASK)
        assert not ((before != MASK) & (before != after)).any(), "a committed token changed"
        assert not committed[:, :start].any() and not committed[:, end:].any(), "outside the block"
        expected = diffusion.transfer_schedule(torch.full((3,), block_length), per_block)[:, s % per_block]
        assert committed.sum(1).tolist() == expected.tolist()


def test_greedy_one_token_blocks_is_left_to_right_decoding():
    model = StandIn(length=9)
    prompt = torch.tensor([[1, 2], [0, 3]])
    out = diffusion.diffusion_generate(model, prompt, 7, 7, 1, mask_id=MASK)
    x = torch.cat((prompt, torch.full((2, 7), MASK)), dim=1)
    for i in range(2, 9):                                  # an independent left-to-right loop
        logits = model(x)[:, i, :MASK]
        x[:, i] = logits.argmax(-1)
    assert torch.equal(out, x)


def test_low_confidence_commits_the_most_confident_position_first():
    model = StandIn(length=6)
    prompt = torch.zeros(1, 0, dtype=torch.long)
    out = diffusion.diffusion_generate(model, prompt, 6, 6, 6, mask_id=MASK)
    for s in range(6):
        x = model.calls[s]
        probs = torch.softmax(model(x)[0, :, :MASK].double(), -1)
        best = probs.max(-1).values.masked_fill(x[0] != MASK, -1.0).argmax().item()
        nxt = model.calls[s + 1] if s < 5 else out
        newly = ((x[0] == MASK) & (nxt[0] != MASK)).nonzero().flatten().tolist()
        assert newly == [best]


def test_gumbel_sampling_follows_softmax_at_temperature():
    class Fixed(nn.Module):
        config = None

        def forward(self, x):                              # same logits at every position
            return torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0, 9.0]).expand(*x.shape, V)
    n, temperature = 40000, 0.7
    out = diffusion.diffusion_generate(Fixed(), torch.zeros(n, 0, dtype=torch.long), 1, 1, 1,
                                       temperature, mask_id=MASK,
                                       generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[:, 0], minlength=V).double() / n
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0]).double() / temperature, 0)
    assert freq[MASK] == 0
    # binomial standard error at n = 40k is <= 0.0025; 0.012 is about 5 sigma
    assert torch.allclose(freq[:MASK], expected, atol=0.012), (freq, expected)


@pytest.mark.parametrize("kwargs,match", [
    (dict(gen_length=6, steps=3, block_length=4), "block_length"),
    (dict(gen_length=6, steps=4, block_length=2), "steps"),
    (dict(gen_length=6, steps=6, block_length=2, remasking="top"), "remasking"),
    (dict(gen_length=6, steps=6, block_length=2, temperature=-1.0), "temperature"),
])
def test_sampler_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        diffusion.diffusion_generate(StandIn(), torch.zeros(1, 1, dtype=torch.long),
                                     mask_id=MASK, **kwargs)


def _exact_negative_elbo(model, x):
    """sum over l of (1/l) * mean over all l-subsets S of sum_{i in S} -log p(x_i | x with S hidden)."""
    L = x.shape[0]
    total = 0.0
    for l in range(1, L + 1):
        subsets = list(itertools.combinations(range(L), l))
        inner = 0.0
        for subset in subsets:
            noisy = x.clone()
            noisy[list(subset)] = MASK
            logp = torch.log_softmax(model(noisy[None])[0, :, :MASK].double(), -1)
            inner -= sum(logp[i, x[i]].item() for i in subset)
        total += inner / len(subsets) / l
    return total


def test_nll_bound_is_an_unbiased_estimate_of_the_exact_negative_elbo():
    model = StandIn(length=4)
    x = torch.tensor([[1, 0, 3, 2], [4, 4, 1, 0]])
    exact = sum(_exact_negative_elbo(model, row) for row in x) / 8
    with torch.no_grad():
        bound, stderr = diffusion.nll_bound(model, x.repeat(500, 1), 8 * 500, MASK, num_samples=4,
                                            generator=torch.Generator().manual_seed(0))
    assert stderr > 0
    assert abs(bound - exact) < 4 * stderr, (bound, exact, stderr)  # a 4-sigma Monte-Carlo check
    assert stderr < 0.05 * exact                                    # and the check is not vacuous


def test_nll_bound_is_reproducible_under_a_seed():
    model = StandIn(length=5)
    x = torch.randint(0, MASK, (37, 5), generator=torch.Generator().manual_seed(3))

    def run(seed):
        return diffusion.nll_bound(model, x, 37 * 5, MASK, num_samples=3, batch_size=16,
                                   generator=torch.Generator().manual_seed(seed))
    assert run(7) == run(7)
    assert run(7) != run(8)
