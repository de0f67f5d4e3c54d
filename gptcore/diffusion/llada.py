"""Masked-diffusion language modelling (LLaDA, Nie et al. 2025, arXiv:2502.09992) on a bidirectional
trunk: the forward masking process, the training loss, the low-confidence remasking sampler and a
Monte-Carlo bound on the negative log-likelihood.

Everything here talks to the network through `logits_fn(x) -> logits`, x (B, L) int64 token ids
with `mask_id` where a token is hidden, logits (B, L, V) (a module returning `(logits, loss)` works
too). A model never predicts `mask_id`: its logit is removed before every softmax here.
"""
import math

import torch
import torch.nn.functional as F

MASK_EPS = 1e-3        # LLaDA's floor on the masking probability: p_mask = (1 - eps) t + eps


def _logits(logits_fn, x, mask_id):
    """logits_fn(x) as float32 (B, L, V) with the mask token's logit at -inf."""
    out = logits_fn(x)
    logits = (out[0] if isinstance(out, tuple) else out).float()
    if not 0 <= mask_id < logits.shape[-1]:
        raise ValueError(f"mask_id: expected an id in [0, {logits.shape[-1]}) (the model's vocab), "
                         f"got {mask_id}")
    return logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))


def forward_mask(x, mask_id, *, eps=MASK_EPS, generator=None):
    """The forward process at a random time per sequence. x (B, L) int64 ->
    (noisy (B, L), masked (B, L) bool, p_mask (B,) float32): t ~ U(0, 1), p_mask = (1 - eps) t + eps,
    each token hidden independently with probability p_mask (so p_mask >= eps > 0)."""
    if not 0 < eps < 1:
        raise ValueError(f"eps: expected a float in (0, 1), got {eps}")
    B, L = x.shape
    t = torch.rand(B, device=x.device, generator=generator)
    p_mask = (1 - eps) * t + eps                                           # (B,)
    masked = torch.rand(B, L, device=x.device, generator=generator) < p_mask[:, None]
    return torch.where(masked, torch.full_like(x, mask_id), x), masked, p_mask


def llada_loss(logits, targets, masked, p_mask):
    """LLaDA's objective: sum over masked positions of CE / p_mask, divided by the number of tokens
    in the batch (B * L). logits (B, L, V), targets (B, L) int64, masked (B, L) bool, p_mask (B,)."""
    B, L, V = logits.shape
    if targets.shape != (B, L) or masked.shape != (B, L) or p_mask.shape != (B,):
        raise ValueError(f"targets/masked/p_mask: expected shapes ({B}, {L}), ({B}, {L}), ({B},) "
                         f"for logits {tuple(logits.shape)}, got {tuple(targets.shape)}, "
                         f"{tuple(masked.shape)}, {tuple(p_mask.shape)}")
    ce = F.cross_entropy(logits.float().reshape(B * L, V), targets.reshape(B * L),
                         reduction="none").view(B, L)
    weighted = torch.where(masked, ce / p_mask[:, None], torch.zeros_like(ce))
    return weighted.sum() / max(B * L, 1)


def diffusion_loss(logits_fn, x, mask_id, *, eps=MASK_EPS, generator=None):
    """One training loss of a clean batch x (B, L): mask it (forward_mask), predict, llada_loss."""
    noisy, masked, p_mask = forward_mask(x, mask_id, eps=eps, generator=generator)
    return llada_loss(_logits(logits_fn, noisy, mask_id), x, masked, p_mask)


def transfer_schedule(num_masked, steps):
    """How many tokens each step commits: num_masked (B,) int64 -> (B, steps) int64, an even split
    with the remainder going to the first steps (LLaDA's linear schedule). Rows sum to num_masked."""
    if steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps}")
    base, remainder = num_masked[:, None] // steps, num_masked[:, None] % steps        # (B, 1)
    step = torch.arange(steps, device=num_masked.device)[None, :]                      # (1, steps)
    return base + (step < remainder).long()


def _gumbel_argmax(logits, temperature, generator):
    """Sample from softmax(logits / temperature) by Gumbel-max, in float64: in float32 the noise of
    near-1 uniforms collapses and skews low-probability tokens (arXiv:2409.02908, LLaDA)."""
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    u = u.clamp_min(torch.finfo(torch.float64).tiny)
    return (logits.double() / temperature - torch.log(-torch.log(u))).argmax(-1)


@torch.no_grad()
def diffusion_generate(model, prompt, gen_length, steps, block_length, temperature=0.0,
                       remasking="low_confidence", *, mask_id=None, generator=None):
    """Generate gen_length tokens after `prompt` (B, P) int64 by iterative unmasking -> (B, P + gen_length).

    The answer is cut into blocks of block_length filled left to right (semi-autoregressive); each
    block gets steps / num_blocks steps. A step runs the model once on the whole batch, predicts
    every masked position (greedy, or Gumbel-max at `temperature`), and commits the scheduled
    number of them in each row: the most confident ("low_confidence" remasking: the rest are
    re-masked) or uniformly random ones ("random"). Committed tokens never change.
    `model` is a logits_fn; mask_id defaults to model.config.vocab_size - 1 (the diffusion presets
    put the mask token last)."""
    if mask_id is None:
        mask_id = model.config.vocab_size - 1
    if prompt.dim() != 2:
        raise ValueError(f"prompt: expected a (B, P) tensor of token ids, got shape {tuple(prompt.shape)}")
    if gen_length < 1 or block_length < 1 or gen_length % block_length:
        raise ValueError(f"gen_length/block_length: expected positive ints with block_length "
                         f"dividing gen_length, got {gen_length} and {block_length}")
    num_blocks = gen_length // block_length
    if steps < num_blocks or steps % num_blocks:
        raise ValueError(f"steps: expected a multiple of the number of blocks ({num_blocks}), got {steps}")
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking: expected 'low_confidence' or 'random', got {remasking!r}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    B, P = prompt.shape
    x = torch.cat((prompt, prompt.new_full((B, gen_length), mask_id)), dim=1)      # (B, P + G)
    position = torch.arange(P + gen_length, device=x.device)
    for block in range(num_blocks):
        start, end = P + block * block_length, P + (block + 1) * block_length
        in_block = (position >= start) & (position < end)                          # (P + G,)
        schedule = transfer_schedule((x[:, start:end] == mask_id).sum(1), steps // num_blocks)
        for step in range(steps // num_blocks):
            logits = _logits(model, x, mask_id)                                    # (B, P + G, V)
            if temperature > 0:
                proposal = _gumbel_argmax(logits, temperature, generator)          # (B, P + G)
            else:
                proposal = logits.argmax(-1)
            if remasking == "low_confidence":
                probs = torch.softmax(logits.double(), dim=-1)
                confidence = probs.gather(-1, proposal[..., None]).squeeze(-1)
            else:
                confidence = torch.rand(x.shape, dtype=torch.float64, device=x.device,
                                        generator=generator)
            open_ = (x == mask_id) & in_block                                      # (B, P + G)
            confidence = confidence.masked_fill(~open_, float("-inf"))
            # commit the schedule[b, step] most confident open positions of each row b
            rank = confidence.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
            commit = (rank < schedule[:, step:step + 1]) & open_
            x = torch.where(commit, proposal, x)
    return x


def nll_bound_samples(logits_fn, x, mask_id, num_samples, *, generator=None):
    """Monte-Carlo samples of the negative ELBO of each sequence x (B, L), in nats per sequence
    -> (num_samples, B) float64. Each sample draws l ~ U{1..L}, hides exactly l uniformly chosen
    tokens and scores (L / l) * sum over them of -log p(x_i | x_masked): LLaDA's low-variance form
    of E_t[(1/t) sum_masked CE], equal to it since integral_0^1 Binom(l; L, t) / t dt = 1 / l."""
    if num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, got {num_samples}")
    B, L = x.shape
    samples = []
    for _ in range(num_samples):
        hidden = torch.randint(1, L + 1, (B, 1), device=x.device, generator=generator)   # (B, 1)
        order = torch.rand(B, L, device=x.device, generator=generator).argsort(1).argsort(1)
        masked = order < hidden                                            # exactly l per row
        noisy = torch.where(masked, torch.full_like(x, mask_id), x)
        logits = _logits(logits_fn, noisy, mask_id)                        # (B, L, V)
        ce = F.cross_entropy(logits.reshape(B * L, -1), x.reshape(B * L),
                             reduction="none").view(B, L).double()
        total = torch.where(masked, ce, torch.zeros_like(ce)).sum(1)       # (B,)
        samples.append(total * L / hidden.squeeze(1).double())
    return torch.stack(samples)


@torch.no_grad()
def nll_bound(logits_fn, sequences, num_units, mask_id, *, num_samples=4, batch_size=256,
              generator=None):
    """The negative-ELBO bound on the NLL of `sequences` (N, L), in nats per unit (e.g. per
    character, with num_units the total count), and its Monte-Carlo standard error.

    Every sequence gets num_samples independent draws; the error is
    sqrt(sum_i var_i / num_samples) / num_units with var_i the sample variance of sequence i's draws,
    so it measures the Monte-Carlo noise of this estimate over this fixed split."""
    if num_samples < 2:
        raise ValueError(f"num_samples: expected an int >= 2 (the error needs two draws), got {num_samples}")
    if num_units <= 0:
        raise ValueError(f"num_units: expected a positive count, got {num_units}")
    total = variance = 0.0
    for begin in range(0, sequences.shape[0], batch_size):
        draws = nll_bound_samples(logits_fn, sequences[begin:begin + batch_size], mask_id,
                                  num_samples, generator=generator)        # (K, b)
        total += draws.mean(0).sum().item()
        variance += draws.var(0, correction=1).sum().item()
    return total / num_units, math.sqrt(variance / num_samples) / num_units
