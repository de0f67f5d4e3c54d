"""The masked-diffusion GPT against the autoregressive one of the same size: a training step of
the names-diffusion recipe against the names recipe (same trunk, bidirectional vs causal
attention), the bare trunk on identical inputs, and sampling throughput of the remasking sampler
at steps = gen_length and gen_length / 4 against KV-cached AR decoding.

Timings alternate ours / peer and keep the min of repeats (the machine is shared)."""

import torch

from gptcore import diffusion
from gptcore.diffusion import train as diffusion_train
from gptcore.training import data
from gptcore.model.config import GPTConfig
from gptcore.model import GPT
from gptcore.training.objective import next_token
from gptcore.training.recipes import RECIPES

from harness import Row, main, time_interleaved

TOKENIZER = data.CharTokenizer.names()



def interleaved(ours, peer, repeat):
    """(min seconds of ours, of peer), calls alternating (harness.time_interleaved)."""
    best = time_interleaved({"ours": ours, "peer": peer}, repeat)
    return best["ours"], best["peer"]


def diffusion_loss(model, batch):
    """The LLaDA loss of the diffusion recipe's training step."""
    return diffusion.diffusion_loss(model, batch["idx"], diffusion_train.mask_id(model.config))


def step_fn(model, loss_fn, batch):
    """One optimiser step (forward, backward, AdamW) as the training loop runs it."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

    def run():
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def training_cases(repeat):
    names = data.load_names()[:4096]
    diff_cfg = diffusion_train.diffusion_config("names-diffusion", TOKENIZER)
    diff_batch = {"idx": diffusion_train.encode_padded(
        names[:RECIPES["names-diffusion"].batch_size], TOKENIZER, diff_cfg.block_size)}
    ar_cfg = GPTConfig.preset("names")
    ar_batch = data.packed_batch(data.encode_documents(
        names[:RECIPES["names"].batch_size], TOKENIZER, ar_cfg.block_size))
    torch.manual_seed(0)
    ours, peer = interleaved(step_fn(GPT(diff_cfg), diffusion_loss, diff_batch),
                             step_fn(GPT(ar_cfg), next_token, ar_batch), repeat)
    rows = [Row("diffusion", f"train step, recipes: {diff_batch['idx'].numel()} vs "
                f"{ar_batch['idx'].numel()} tokens", ours, peer, "names (AR)")]
    # the trunks alone on the same padded (64, 16) batch: only causal=False differs
    idx = diffusion_train.encode_padded(names[:64], TOKENIZER, 16)
    batch = {"idx": idx, "targets": idx}
    bidirectional = GPT(GPTConfig.preset("names", causal=False))
    causal = GPT(GPTConfig.preset("names"))
    ours, peer = interleaved(step_fn(bidirectional, next_token, batch),
                             step_fn(causal, next_token, batch), repeat)
    rows.append(Row("diffusion", "train step, same (64, 16) input", ours, peer, "causal trunk"))
    return rows


def sampling_cases(repeat, n):
    model = GPT(diffusion_train.diffusion_config("names-diffusion", TOKENIZER)).eval()
    ar = GPT(GPTConfig.preset("names")).eval()
    gen = model.config.block_size
    bos = torch.full((n, 1), TOKENIZER.bos, dtype=torch.int64)
    ar_tokens = {}

    def ar_run():
        out = ar.generate(bos, gen, temperature=1.0, generator=torch.Generator().manual_seed(0))
        ar_tokens["n"] = out[:, 1:].numel()
    rows = []
    for steps in (gen, gen // 4):
        def diffusion_run():
            # one block: the cost is one batched forward per step whatever the blocks
            diffusion_train.sample(model, TOKENIZER, n, steps=steps, block_length=gen,
                                   temperature=1.0, generator=torch.Generator().manual_seed(0))
        ours, peer = interleaved(diffusion_run, ar_run, repeat)
        rows.append(Row("diffusion", f"sample {n} x {gen} tokens, steps={steps}", ours, peer,
                        "AR + KV cache",
                        note=f"{n * gen / ours:,.0f} vs {ar_tokens['n'] / peer:,.0f} tokens/s"))
    return rows


def run(quick=False):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the recipes' setting: toy models lose to thread overhead
    try:
        return training_cases(3 if quick else 10) + sampling_cases(2 if quick else 5,
                                                                   50 if quick else 200)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main(run, __doc__)
