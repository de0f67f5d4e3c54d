"""The GPU half of `make gpu-check`: gptcore's Triton kernels against torch SDPA (and
flash-attn where installed) and against plain-PyTorch grouped experts, on one CUDA device, bf16.

    python bench/gpu_check.py        # needs a CUDA GPU; about a minute

Each row checks the result against the peer first (max |diff| printed), then times both with
triton.testing.do_bench (median ms) and prints TFLOP/s and the ratio (peer / gptcore).
"""
import sys

import torch

import gptcore


def _tflops(flops, ms):
    return flops / ms / 1e9


def _attention_rows(do_bench):
    import torch.nn.functional as F
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    rows = []
    for B, H, S, D, causal in ((4, 16, 2048, 64, True), (2, 16, 4096, 128, True),
                               (4, 16, 2048, 128, False)):
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * B * H * S * S * D / (2 if causal else 1)
        ours = lambda: gptcore.attention(q, k, v, causal=causal)                # noqa: E731
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
        diff = (ours().float() - sdpa().float()).abs().max().item()
        t_ours, t_sdpa = do_bench(ours), do_bench(sdpa)
        case = f"attention B{B} H{H} S{S} D{D} {'causal' if causal else 'full'}"
        rows.append((case, t_ours, t_sdpa, "sdpa", _tflops(flops, t_ours), diff))
        if flash_attn_func is not None:
            qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
            t_fa = do_bench(lambda: flash_attn_func(qt, kt, vt, causal=causal))
            rows.append((case, t_ours, t_fa, "flash-attn", _tflops(flops, t_ours), float("nan")))
    return rows


def _moe_rows(do_bench):
    rows = []
    for T, H, I, E, k in ((16, 2880, 2880, 32, 4), (4096, 4096, 14336, 8, 2)):
        x = torch.randn(T, H, device="cuda", dtype=torch.bfloat16)
        gate_up = torch.randn(E, 2 * I, H, device="cuda", dtype=torch.bfloat16) / H ** 0.5
        down = torch.randn(E, H, I, device="cuda", dtype=torch.bfloat16) / I ** 0.5
        weights, indices = gptcore.route(torch.randn(T, E, device="cuda"), k)

        def peer():
            out = torch.zeros(T, H, device="cuda", dtype=torch.float32)
            for e in range(E):
                tok, slot = torch.where(indices == e)
                gate, up = (x[tok] @ gate_up[e].t()).chunk(2, dim=-1)
                y = (torch.nn.functional.silu(gate) * up) @ down[e].t()
                out.index_add_(0, tok, y.float() * weights[tok, slot, None])
            return out.to(x.dtype)

        ours = lambda: gptcore.moe_experts(x, indices, weights, gate_up, down)  # noqa: E731
        diff = (ours().float() - peer().float()).abs().max().item()
        t_ours, t_peer = do_bench(ours), do_bench(peer)
        rows.append((f"moe_experts T{T} H{H} I{I} E{E} k{k}", t_ours, t_peer, "torch loop",
                     _tflops(2 * T * k * 3 * H * I, t_ours), diff))
    return rows


def main():
    if not torch.cuda.is_available():
        print("bench/gpu_check.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from triton.testing import do_bench
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16")
    print(f"{'case':<44} {'gptcore':>9} {'peer':>9} {'peer name':<11} {'ratio':>6} "
          f"{'TFLOP/s':>8} {'max|diff|':>9}")
    for case, ours, peer, name, tflops, diff in _attention_rows(do_bench) + _moe_rows(do_bench):
        print(f"{case:<44} {ours:>7.3f}ms {peer:>7.3f}ms {name:<11} {peer / ours:>5.2f}x "
              f"{tflops:>8.1f} {diff:>9.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
