"""Whole models, CPU: gptcore switched into Hugging Face Llama, Mixtral and gpt-oss (random
weights, small configs) against transformers' fastest CPU default for each, and a
nanoGPT-style plain PyTorch model (bench/nanogpt.py) before and after the one-line SDPA switch.

One model per config and dtype, built directly in that dtype and freed before the next, and
switched back and forth with gptcore.patch / gptcore.unpatch between interleaved repeats, so
both sides share weights and see the same load. The peer is attention "sdpa" (or "eager" for
gpt-oss, whose sinks SDPA cannot take) with experts "eager" or "grouped_mm", whichever is
faster in a first run of each (only that one is then repeated). Prefill: one forward of
2 x 512 tokens keeping the last logits (as generate() does); decode: generate() of 64 greedy
tokens after a 16-token prompt, batch 1. Ratio = peer time / gptcore time. Each row is
printed to stderr as soon as it is measured.

What a drop-in can gain is bounded by what it replaces, so each row also times the model with
attention and experts replaced by zeros ("free", same run) and records the work those parts
must still do (FLOPs, or weight bytes at decode): README's targets table turns them into the
ceiling peer time / (free time + that work at this machine's roof).

    python bench/bench_models.py [--quick] [--only llama gpt_oss nanogpt] [--dtype bf16] [--json F]
"""
import gc
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F

import gptcore
from harness import Row, environment, measure_roofs, report, time_interleaved

# name -> (config class, options); vocab 32000, rope defaults. Expert widths keep each fp32
# model under ~1.1 GB on a shared machine: Mixtral I=1024, gpt-oss I=512.
CONFIGS = {
    "llama": ("LlamaConfig", dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=16,
                                  num_key_value_heads=4, intermediate_size=2816)),
    "mixtral": ("MixtralConfig", dict(hidden_size=1024, num_hidden_layers=4,
                                      num_attention_heads=16, num_key_value_heads=4,
                                      intermediate_size=1024, num_local_experts=8,
                                      num_experts_per_tok=2)),
    "gpt_oss": ("GptOssConfig", dict(hidden_size=1024, num_hidden_layers=4,
                                     num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                                     intermediate_size=512, num_local_experts=32,
                                     num_experts_per_tok=4, sliding_window=128)),
}
QUICK = dict(num_hidden_layers=1)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Interleaved repeats (min) after one warm-up of each side. A decode row is 1 + REPEAT
# generate() calls per side, the bulk of a full run's time.
REPEAT = 3
# Runs of each Hugging Face experts implementation (after one warm-up) that choose the peer.
PEER_TRIALS = 2


def _say(row):
    """One measured row on stderr at once, so a long run shows its progress."""
    print(f"  {row.case}: gptcore {row.ours_s * 1e3:.1f} ms, {row.peer} "
          f"{row.peer_s * 1e3:.1f} ms, {row.ratio:.2f}x ({row.note})", file=sys.stderr, flush=True)
    return row


def build(name, dtype, quick):
    import transformers
    cls, options = CONFIGS[name]
    config = getattr(transformers, cls)(vocab_size=32000, **{**options, **(QUICK if quick else {})})
    torch.manual_seed(0)
    attn = "eager" if name == "gpt_oss" else "sdpa"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn,
                                                          dtype=dtype)
    return model.eval()


def _attention_pairs(S, window):
    """(query, key) pairs a causal attention over S positions computes, in a window if given."""
    return S * (S + 1) // 2 if window is None else sum(min(i + 1, window) for i in range(S))


def work(model, B, S):
    """What one call must do at least, for the roofs: prefill FLOPs of B x S tokens keeping the
    last logits, and the weight bytes one decode token reads at batch 1; each as (whole model,
    the part gptcore switches: attention and experts). Experts count k/E of their weights (the
    routed ones); the embedding table counts only when tied to the output layer (decode reads
    one row of it otherwise); attention counts its causal (and windowed) pairs."""
    config = model.config
    head = model.get_output_embeddings().weight
    embed = model.get_input_embeddings().weight
    params = {p.data_ptr(): (name, p) for name, p in model.named_parameters()}.values()
    experts = {p.data_ptr() for m in model.modules() if hasattr(m, "gate_up_proj")
               for p in m.parameters()}
    share = getattr(config, "num_experts_per_tok", 1) / getattr(config, "num_local_experts", 1)
    flops, weight_bytes = [0.0, 0.0], [0.0, 0.0]    # (whole model, switched part)
    for name, p in params:
        routed = p.data_ptr() in experts
        used = share if routed else 1.0
        matrix = p.dim() >= 2 and not name.endswith("bias")   # gpt-oss's expert biases are 2-D
        if matrix and p.data_ptr() not in (head.data_ptr(), embed.data_ptr()):
            flops[0] += 2 * B * S * used * p.numel()
            flops[1] += 2 * B * S * used * p.numel() if routed else 0.0
        if p.data_ptr() != embed.data_ptr() or embed.data_ptr() == head.data_ptr():
            weight_bytes[0] += used * p.numel() * p.element_size()
            weight_bytes[1] += used * p.numel() * p.element_size() if routed else 0.0
    flops[0] += 2 * B * head.numel()
    D = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    for kind in types:
        window = config.sliding_window if kind == "sliding_attention" else None
        attention = 4 * B * config.num_attention_heads * D * _attention_pairs(S, window)
        flops[0] += attention
        flops[1] += attention
    return flops, weight_bytes


FREE = "gptcore-bench-free"


def _free_attention(module, query, key, value, attention_mask, **kwargs):
    """An attention that costs nothing: zeros (B, Sq, H, D)."""
    B, H, Sq, D = query.shape
    return query.new_zeros(B, Sq, H, D), None


def _free_experts(experts, hidden_states, top_k_index, top_k_weights):
    """Experts that cost nothing: zeros (T, H)."""
    return torch.zeros_like(hidden_states)


def free(model, fn):
    """`fn` with the parts gptcore switches (attention, experts) costing nothing: its time is
    the best any drop-in could reach, so peer time / this time is the ceiling of the ratio."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.moe import ExpertsInterface
    from transformers.masking_utils import flash_attention_mask
    AttentionInterface.register(FREE, _free_attention)
    AttentionMaskInterface.register(FREE, flash_attention_mask)
    ExpertsInterface.register(FREE, _free_experts)
    has_experts = any(hasattr(m, "gate_up_proj") for m in model.modules())

    def run():
        attn, experts = model.config._attn_implementation, model.config._experts_implementation
        model.set_attn_implementation(FREE)
        if has_experts:
            model.set_experts_implementation(FREE)
        try:
            fn()
        finally:
            model.set_attn_implementation(attn)
            if has_experts:
                model.set_experts_implementation(experts)
    return run


def model_rows(name, dtype, quick):
    model = build(name, dtype, quick)
    S, new = (64, 8) if quick else (512, 64)
    prompt = torch.randint(0, 32000, (2, S))
    short = torch.randint(0, 32000, (1, 16))

    def prefill():
        with torch.no_grad():
            model(prompt, logits_to_keep=1)

    def decode():
        model.generate(short, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    experts = ["eager", "grouped_mm"] if hasattr(model, "set_experts_implementation") and \
        name != "llama" else [None]

    def peer(impl, fn):
        def run():
            if impl is not None:
                model.set_experts_implementation(impl)
            fn()
        return run

    def ours(fn):
        def run():
            gptcore.patch(model)
            try:
                fn()
            finally:
                gptcore.unpatch(model)
        return run

    rows = []
    tag = str(dtype).removeprefix("torch.")
    flops, token_bytes = work(model, 2, S)
    # decode: `new` forward passes, each reading at least the weights of one token
    amount = {"prefill": dict(flops=flops[0]),
              "decode": dict(bytes=new * token_bytes[0], stream="read")}
    switched = {"prefill": dict(switched_flops=flops[1]),
                "decode": dict(switched_bytes=new * token_bytes[1])}
    attn = "eager" if name == "gpt_oss" else "sdpa"
    for what, fn, tokens in (("prefill", prefill, 2 * S), ("decode", decode, new)):
        peers = {f"experts={e}": peer(e, fn) for e in experts}
        # The peer is the fastest experts implementation after a warm-up, over PEER_TRIALS runs
        # of each in turn (one cold run would pick whichever allocated least the first time).
        trials = time_interleaved(peers, 1 if quick else PEER_TRIALS)
        peer_name = min(trials, key=trials.get)
        best = time_interleaved({"gptcore": ours(fn), peer_name: peers[peer_name],
                                 "free": free(model, fn)}, 2 if quick else REPEAT)
        label = attn + ("" if experts == [None] else "+" + peer_name.removeprefix("experts="))
        case = (f"{name} {what} 2x{S}" if what == "prefill" else f"{name} decode {new} tok") + \
            f" {tag}"
        rows.append(_say(Row("model", case, best["gptcore"], best[peer_name], f"hf {label}",
                             note=f"{tokens / best['gptcore']:.0f} vs "
                                  f"{tokens / best[peer_name]:.0f} tok/s; attention and "
                                  f"experts free: {best['free'] * 1e3:.0f} ms",
                             extra=dict(free_s=best["free"], **switched[what]),
                             dtype="bf16" if dtype == torch.bfloat16 else "fp32",
                             **amount[what])))
    return rows


def nanogpt_rows(quick):
    from nanogpt import GPT
    torch.manual_seed(0)
    model = GPT(block_size=256 if quick else 1024)
    B, T = (2, 256) if quick else (4, 1024)
    idx = torch.randint(0, 8192, (B, T))

    def step():
        model.zero_grad(set_to_none=True)
        model(idx, idx).backward()

    def switched():
        with gptcore.sdpa_override():
            step()

    def free():  # attention that costs nothing but still hands q, k and v a (zero) gradient
        with mock.patch.object(F, "scaled_dot_product_attention",
                               lambda q, k, v, **options: (q + k + v) * 0.0):
            step()

    best = time_interleaved({"gptcore": switched, "torch": step, "free": free},
                            2 if quick else REPEAT)
    C, layers = model.wpe.weight.shape[1], len(model.blocks)
    # causal attention forward: QK^T and PV, 2 FLOPs per multiply-add; useful backward work is
    # 2x that (dV, dP, dQ, dK), not FlashAttention's 2.5x, which counts recomputing QK^T
    attention = 3 * layers * 4 * B * C * T * (T + 1) // 2
    return [_say(Row("model", f"nanoGPT fwd+bwd B{B} T{T} fp32", best["gptcore"], best["torch"],
                     "torch sdpa", note=f"{B * T / best['gptcore']:.0f} vs "
                                        f"{B * T / best['torch']:.0f} tok/s; attention "
                                        f"free: {best['free'] * 1e3:.0f} ms",
                     extra=dict(free_s=best["free"], switched_flops=attention)))]


def run(quick=False, only=None, dtypes=("fp32", "bf16")):
    """Rows of the models in `only` (default: all, and nanogpt) in `dtypes`; each model is
    freed before the next is built (peak memory is one model, about 1.1 GB at most)."""
    only = list(CONFIGS) + ["nanogpt"] if only is None else only
    rows = []
    if "nanogpt" in only:
        rows += nanogpt_rows(quick)
    for tag in dtypes:
        for name in CONFIGS:
            if name in only:
                rows += model_rows(name, DTYPES[tag], quick)
                gc.collect()
    return rows


def main():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one layer, short sequences")
    parser.add_argument("--only", nargs="+", choices=[*CONFIGS, "nanogpt"],
                        help="only these models (default: all)")
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                        help="only these dtypes of the HF models (default: fp32 bf16)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    start = time.perf_counter()
    env = environment()
    roofs = measure_roofs()
    rows = run(args.quick, args.only, args.dtype)
    report(rows, roofs, args.json, env)
    print(f"wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
