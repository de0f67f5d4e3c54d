"""Attention: gptcore's C++ CPU kernels against PyTorch's SDPA (its CPU flash attention),
SDPA with a boolean mask, torch.compile(flex_attention) and Hugging Face gpt-oss eager
attention, on the cases of README's performance tables.

Napkin math: FLOPs = 4 * B * H * (visible query-key pairs) * D (QK^T and PV, 2 each), so
causal halves the full Sq * Sk and a window counts only its band. Decode is bound by reading
K and V once: GB/s = (K + V bytes) / time, against the read roof."""

import torch
import torch.nn.functional as F

import gptcore
from harness import Row, main, time_fn


def time_pair(ours, peer, repeat=5):
    """Min seconds of `ours` and of `peer`, their runs alternating so that both see the same
    load from other jobs on a shared machine (the ratio is the figure that matters)."""
    t_ours = t_peer = float("inf")
    for _ in range(repeat):
        t_ours = min(t_ours, time_fn(ours, warmup=0 if t_ours < float("inf") else 1, repeat=1))
        t_peer = min(t_peer, time_fn(peer, warmup=0 if t_peer < float("inf") else 1, repeat=1))
    return t_ours, t_peer


def visible_pairs(Sq, Sk, causal, window=None):
    """Query-key pairs the bottom-right aligned mask lets through (API.md semantics)."""
    i = torch.arange(Sq)[:, None] + (Sk - Sq)
    j = torch.arange(Sk)[None, :]
    ok = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        ok &= j <= i
    if window is not None:
        ok &= (i - j).abs() < window
    return ok


def qkv(B, Hq, Hkv, Sq, Sk, D, dtype=torch.float32, grad=False):
    torch.manual_seed(0)
    return (torch.randn(B, Hq, Sq, D, dtype=dtype, requires_grad=grad),
            torch.randn(B, Hkv, Sk, D, dtype=dtype, requires_grad=grad),
            torch.randn(B, Hkv, Sk, D, dtype=dtype, requires_grad=grad))


def dense_cases(quick):
    """Cases 1 and 2: full and causal attention against SDPA."""
    rows = []
    shapes = [(4, 8, 256, 64)] if quick else [(4, 8, 1024, 64)]
    for B, H, S, D in shapes:
        q, k, v = qkv(B, H, H, S, S, D)
        for causal in (True, False):
            ours, peer = time_pair(lambda: gptcore.attention(q, k, v, causal=causal),
                                   lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
            flops = 4 * B * H * S * S * D / (2 if causal else 1)
            rows.append(Row("attention", f"B{B} H{H} S{S} D{D} {'causal' if causal else 'full'} fp32",
                            ours, peer, "sdpa", flops=flops))
    if quick:
        return rows
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = qkv(1, 16, 16, 2048, 2048, 128, dtype)
        ours, peer = time_pair(lambda: gptcore.attention(q, k, v, causal=True),
                               lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 4)
        name = "bf16" if dtype == torch.bfloat16 else "fp32"
        rows.append(Row("attention", f"B1 H16 S2048 D128 causal {name}", ours, peer,
                        "sdpa", flops=4 * 16 * 2048 * 2048 * 128 / 2, dtype=name))
    return rows


def window_cases(quick):
    """Case 3: causal sliding window 128 against SDPA + boolean mask and compiled flex."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    B, H, S, D, W = (1, 8, 2048, 64, 128) if quick else (1, 8, 8192, 64, 128)
    q, k, v = qkv(B, H, H, S, S, D)
    mask = visible_pairs(S, S, True, W)
    flops = 4 * B * H * D * int(mask.sum())
    ours, sdpa = time_pair(lambda: gptcore.attention(q, k, v, causal=True, window=W),
                           lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), 2)
    case = f"B{B} H{H} S{S} D{D} causal window {W}"
    rows = [Row("attention", case, ours, sdpa, "sdpa+bool mask", flops=flops)]
    if quick:
        return rows

    def band(b, h, qi, kj):
        return (kj <= qi) & (qi - kj < W)
    block_mask = create_block_mask(band, None, None, S, S, device="cpu")
    flex = torch.compile(flex_attention)
    flex(q, k, v, block_mask=block_mask)  # compile outside the timing
    ours, peer = time_pair(lambda: gptcore.attention(q, k, v, causal=True, window=W),
                           lambda: flex(q, k, v, block_mask=block_mask))
    rows.append(Row("attention", case, ours, peer, "compiled flex", flops=flops))
    return rows


def hf_gpt_oss_eager():
    """Hugging Face gpt-oss's eager attention and a stand-in module carrying its attributes."""
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    class Layer(torch.nn.Module):
        def __init__(self, sinks, groups):
            super().__init__()
            self.sinks = sinks
            self.num_key_value_groups = groups
            self.training = False
    return eager_attention_forward, Layer


def flex_with_sinks(S, window):
    """The strongest sink-capable CPU peer: compiled FlexAttention (GQA, causal band) with the
    sink as one extra key that every query sees, its score replaced by the sink and its value
    zero. (Joining the sink through the returned lse, out * sigmoid(lse - sink), does not
    compile on CPU in torch 2.13: "return_lse is not supported yet".)"""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def band(b, h, qi, kj):
        visible = (kj <= qi) & ((qi - kj < window) if window else True)
        return visible | (kj == S)
    block_mask = create_block_mask(band, None, None, S, S + 1, device="cpu")
    flex = torch.compile(flex_attention)

    def attend(q, k, v, sinks):
        pad = k.new_zeros(*k.shape[:2], 1, k.shape[3])
        k1, v1 = torch.cat([k, pad], 2), torch.cat([v, pad], 2)   # (B, Hkv, S + 1, D)

        def sink_score(score, b, h, qi, kj):
            return torch.where(kj == S, sinks[h], score)
        return flex(q, k1, v1, score_mod=sink_score, block_mask=block_mask, enable_gqa=True)
    return attend


def gpt_oss_cases(quick):
    """Case 4: gpt-oss attention (64 q heads, 8 kv heads, D64, sinks), windowed and full layers,
    against HF's eager attention and compiled FlexAttention + sink."""
    eager, Layer = hf_gpt_oss_eager()
    S = 512 if quick else 2048
    q, k, v = qkv(1, 64, 8, S, S, 64)
    sinks = torch.randn(64)
    layer = Layer(sinks, 8)
    rows = []
    for window in ((128, None) if not quick else (128,)):
        visible = visible_pairs(S, S, True, window)
        additive = torch.zeros(1, 1, S, S).masked_fill(~visible, float("-inf"))
        ours, peer = time_pair(
            lambda: gptcore.attention(q, k, v, causal=True, window=window, sinks=sinks),
            lambda: eager(layer, q, k, v, additive, 1 / 8.0), 3)
        case = f"gpt-oss Hq64 Hkv8 S{S} D64 sinks {'window 128' if window else 'causal'}"
        flops = 4 * 64 * 64 * int(visible.sum())
        rows.append(Row("attention", case, ours, peer, "hf gpt-oss eager", flops=flops))
        flex = flex_with_sinks(S, window)
        flex(q, k, v, sinks)  # compile outside the timing
        ours, peer = time_pair(
            lambda: gptcore.attention(q, k, v, causal=True, window=window, sinks=sinks),
            lambda: flex(q, k, v, sinks), 3)
        rows.append(Row("attention", case, ours, peer, "compiled flex+sink", flops=flops))
    return rows


def varlen_case(quick):
    """Case 5: 16 packed sequences (lengths 16..1024, fixed seed), causal, against what a user
    would write with SDPA: a loop over the sequences, each SDPA(is_causal=True), and (a second
    row) SDPA on the padded batch with a key-padding + causal mask."""
    gen = torch.Generator().manual_seed(0)
    n, H, D = (4, 8, 64) if quick else (16, 8, 64)
    lens = torch.randint(16, 257 if quick else 1025, (n,), generator=gen)
    L = int(lens.max())
    cu = torch.zeros(n + 1, dtype=torch.int32)
    cu[1:] = lens.cumsum(0)
    T = int(cu[-1])
    q, k, v = (torch.randn(T, H, D) for _ in range(3))
    padded = [torch.zeros(n, H, L, D) for _ in range(3)]
    for i in range(n):
        for dst, src in zip(padded, (q, k, v)):
            dst[i, :, :lens[i]] = src[cu[i]:cu[i + 1]].transpose(0, 1)
    keys = torch.arange(L)
    mask = (keys[None, :] <= keys[:, None])[None, None] & (keys[None, None, None, :] < lens[:, None, None, None])
    bounds = list(zip(cu[:-1].tolist(), cu[1:].tolist()))

    def per_sequence():
        outs = [F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1),
                                               v[a:b].transpose(0, 1), is_causal=True)
                for a, b in bounds]                                     # (H, len, D) each
        return torch.cat([o.transpose(0, 1) for o in outs])           # (T, H, D)

    def ours():
        return gptcore.attention_varlen(q, k, v, cu, cu, L, L, causal=True)
    flops = sum(4 * H * D * int(l) * (int(l) + 1) / 2 for l in lens)
    case = f"varlen {n} seqs {int(lens.min())}..{L} H{H} D{D} causal"
    rows = []
    for name, peer in (("sdpa per-sequence loop", per_sequence),
                       ("sdpa padded+mask", lambda: F.scaled_dot_product_attention(
                           *padded, attn_mask=mask))):
        t_ours, t_peer = time_pair(ours, peer)
        rows.append(Row("attention", case, t_ours, t_peer, name, flops=flops))
    return rows


def decode_case(quick):
    """Case 6: one query row per head against a long KV cache: bound by reading K and V."""
    Sk = 2048 if quick else 8192
    q, k, v = qkv(1, 32, 8, 1, Sk, 128)
    ours, peer = time_pair(lambda: gptcore.attention(q, k, v),
                           lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), 20)
    return [Row("attention", f"decode Sq1 Sk{Sk} Hq32 Hkv8 D128", ours, peer, "sdpa gqa",
                bytes=2 * k.numel() * 4, stream="read")]


def backward_case(quick):
    """Case 7: forward + backward of case 1 causal against SDPA's. Useful FLOPs only: the
    forward's two products and the four the backward needs (dV, dP, dQ, dK), 3x the forward.
    FlashAttention's benchmarks count 3.5x (the backward as 2.5x, its five products including
    the recomputation of QK^T), which would show these GFLOP/s 7/6 higher."""
    B, H, S, D = (4, 8, 256, 64) if quick else (4, 8, 1024, 64)
    q, k, v = qkv(B, H, H, S, S, D, grad=True)
    grad = torch.randn(B, H, S, D)

    def step(attn):
        def run():
            out = attn(q, k, v)
            torch.autograd.grad(out, (q, k, v), grad)
        return run
    ours, peer = time_pair(step(lambda q, k, v: gptcore.attention(q, k, v, causal=True)),
                           step(lambda q, k, v: F.scaled_dot_product_attention(q, k, v,
                                                                               is_causal=True)), 4)
    flops = 3 * 4 * B * H * S * S * D / 2          # forward 1x + backward 2x, no recomputation
    return [Row("attention", f"fwd+bwd B{B} H{H} S{S} D{D} causal fp32", ours, peer, "sdpa",
                flops=flops)]


def run(quick=False):
    rows = []
    for cases in (dense_cases, window_cases, gpt_oss_cases, varlen_case, decode_case,
                  backward_case):
        rows += cases(quick)
    return rows


def test_attention_causal(benchmark):
    q, k, v = qkv(2, 8, 8, 256, 256, 64)
    benchmark(gptcore.attention, q, k, v, causal=True)


def test_attention_decode(benchmark):
    q, k, v = qkv(1, 32, 8, 1, 2048, 128)
    benchmark(gptcore.attention, q, k, v)


if __name__ == "__main__":
    main(run, __doc__)
