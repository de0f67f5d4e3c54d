"""Whole-model figures for gptcore.GPT on this CPU, each against a peer in the same run:

- a training step (forward, backward, AdamW) of names-moe and of microgpt on gptcore's fast
  backend against the same model and batch under gptcore.backend("ref");
- one KV-cache decode step at 256 tokens of context against recomputing the 256-token prefix
  (gpt-oss-tiny: window-128 ring buffers, sinks, GQA, MoE).

Toy models run on one thread (thread start-up costs more than the work at d_model 64).
Napkin math: a training step costs about 6 FLOPs per active parameter per token; a decode
step streams every weight once (fp32 bytes)."""

import torch

import gptcore
from gptcore import GPT, GPTConfig
from gptcore.training import data
from gptcore.training.objective import count_tokens, next_token
from gptcore.training.train import make_optimizer
from harness import Row, main, time_interleaved



def interleaved(ours, peer, repeat):
    """(min seconds of ours, of peer), calls alternating (harness.time_interleaved)."""
    best = time_interleaved({"ours": ours, "peer": peer}, repeat)
    return best["ours"], best["peer"]


def _train_step(preset, batch_size, backend, seed=0):
    """A closure running one training step of `preset` under `backend` on a fixed batch."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.preset(preset))
    seqs = data.encode_documents(data.load_names()[:4096], data.CharTokenizer.names(),
                                 model.config.block_size)
    batch = data.Batches(seqs, batch_size, packed=batch_size > 1, seed=seed)(0)
    opt = make_optimizer(model, 1e-3, (0.9, 0.95), 1e-8, 0.0)

    def step():
        with gptcore.backend(backend):
            loss = next_token(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return step, model, count_tokens(batch)


def _train_rows(quick):
    rows = []
    cases = [("names-moe", 64)] + ([] if quick else [("names-moe", 256)]) + [("microgpt", 1)]
    for preset, batch_size in cases:
        ours, model, tokens = _train_step(preset, batch_size, "auto")
        peer, _, _ = _train_step(preset, batch_size, "ref")
        for fn in (ours, peer):                                         # warm-up
            fn()
        t_ours, t_peer = interleaved(ours, peer, 5 if quick else 15)
        active = model.num_params(active=True)
        note = f"{tokens / t_ours:,.0f} tok/s vs {tokens / t_peer:,.0f}"
        if preset == "microgpt":
            note += f"; 1000 steps ~{t_ours * 1000:.1f} s"
        rows.append(Row("train", f"{preset} step, {batch_size} names ({tokens} tokens)", t_ours,
                        t_peer, "gptcore ref", flops=6 * active * tokens, note=note))
    return rows


def _decode_rows(quick):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("gpt-oss-tiny")).eval()
    context = 256
    idx = torch.randint(0, 27, (1, context + 1))
    caches = model.make_caches(1, context + 1)
    with torch.no_grad():
        model.decode(idx[:, :context], caches)                         # prefill

        def cached():
            for cache in caches:
                cache.length = context       # rewind: every call is the step at position 256
            return model.decode(idx[:, context:], caches)

        def recompute():
            return model(idx)[0][:, -1]
        for fn in (cached, recompute):
            fn()
        t_ours, t_peer = interleaved(cached, recompute, 10 if quick else 30)
    weight_bytes = 4 * model.num_params(active=True)
    return [Row("decode", f"gpt-oss-tiny 1 token at {context} context", t_ours, t_peer,
                "recompute prefix", bytes=weight_bytes, stream="read",
                note="KV cache vs full forward")]


def run(quick=False):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_rows(quick) + _decode_rows(quick)
    finally:
        torch.set_num_threads(threads)


def test_train_step(benchmark):
    step, _, _ = _train_step("microgpt", 1, "auto")
    benchmark(step)


if __name__ == "__main__":
    main(run, __doc__)
