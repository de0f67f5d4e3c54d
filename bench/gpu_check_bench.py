"""The stages of bench/gpu_check.py that need the GPU: environment, smoke, and the attention and
MoE timings against their peers at README's shapes (bf16, plus one fp32 row per policy).

    python bench/gpu_check_bench.py environment|smoke|attention|moe [--quick]

Each row is checked against its peer first (max |diff|), then both are timed with
triton.testing.do_bench (median ms); TFLOP/s count useful work (attention 4·B·H·Sq·Sk·D, halved
for causal, only visible pairs for windows; experts 2·T·k·3·H·I). The rows go to the JSON file
named by GPU_CHECK_ROWS (bench/gpu_check.py sets it) as they are measured, and to stdout.
"""
import json
import os
import platform
import subprocess
import sys

import torch

import gptcore

ROWS = []


def emit(row):
    """Prints a row and rewrites the rows file, so a stage killed by its time box keeps the
    rows it measured."""
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    path = os.environ.get("GPU_CHECK_ROWS")
    if path:
        with open(path, "w") as f:
            json.dump(ROWS, f, indent=1)


def _timed(op, case, ours, peer, peer_name, flops, note=""):
    """Checks `ours()` against `peer()`, times both, emits the row. A failing peer is recorded
    (its error in `note`) and does not stop the stage."""
    from triton.testing import do_bench
    row = {"op": op, "case": case, "peer": peer_name, "note": note}
    try:
        row["max_diff"] = (ours().float() - peer().float()).abs().max().item()
        row["peer_ms"] = do_bench(peer)
    except Exception as e:                                  # the peer's failure is a result
        row["note"] = f"{note} peer failed: {type(e).__name__}: {e}"[:300].strip()
    row["ours_ms"] = do_bench(ours)
    row["tflops"] = flops / row["ours_ms"] / 1e9
    if "peer_ms" in row:
        row["ratio"] = row["peer_ms"] / row["ours_ms"]
    emit(row)


def environment():
    props = torch.cuda.get_device_properties(0)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,"
                              "power.limit", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        smi = None
    import triton
    emit({"gpu": torch.cuda.get_device_name(),
          "capability": list(torch.cuda.get_device_capability()),
          "memory_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count,
          "nvidia_smi": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
          "triton": triton.__version__, "python": platform.python_version(),
          "backends": gptcore.available_backends()})


def smoke():
    """One attention and one MoE call on the Triton backend against gptcore.ref, fp32 and
    bf16: catches a broken build or driver before the long stages run."""
    assert gptcore.available_backends()["triton"], "the triton backend did not load"
    torch.manual_seed(0)
    # relative to max(1, max |ref|): fp32 products ("ieee", torch's default) reorder sums only;
    # bf16 rounds the inputs' products' operands, P and the activation to 8 bits: a few ulps
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        q, k, v = (torch.randn(2, 4, 200, 64, device="cuda", dtype=dtype) for _ in range(3))
        with gptcore.backend("triton"):
            got = gptcore.attention(q, k, v, causal=True)
        want = gptcore.ref.attention(q.float(), k.float(), v.float(), causal=True)
        x = torch.randn(33, 128, device="cuda", dtype=dtype)
        gate_up = (torch.randn(8, 256, 128, device="cuda") / 11).to(dtype)
        down = (torch.randn(8, 128, 128, device="cuda") / 11).to(dtype)
        weights, indices = gptcore.route(torch.randn(33, 8, device="cuda"), 2)
        with gptcore.backend("triton"):
            y = gptcore.moe_experts(x, indices, weights, gate_up, down)
        y_ref = gptcore.ref.moe_experts(x.float(), indices, weights, gate_up.float(),
                                        down.float())
        for name, a, b in (("attention", got, want), ("moe_experts", y, y_ref)):
            diff = (a.float() - b).abs().max().item()
            bound = tol * max(1.0, b.abs().max().item())
            emit({"check": name, "dtype": str(dtype), "max_diff": diff, "bound": bound})
            assert diff <= bound, f"{name} {dtype}: max |diff| {diff:.3g} > {bound:.3g}"


def _attention_flops(B, H, Sq, Sk, D, causal, window=None):
    if window is not None:
        pairs = sum(min(i + 1, window) for i in range(Sk))
    else:
        pairs = Sq * Sk / (2 if causal else 1)
    return 4 * B * H * pairs * D


def attention(quick):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention)
    bf16 = torch.bfloat16
    dense = [(4, 8, 1024, 64, True), (4, 8, 1024, 64, False), (1, 16, 2048, 128, True)]
    for B, H, S, D, causal in dense[:1] if quick else dense:
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=bf16) for _ in range(3))

        def sdpa_flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        _timed("attention", f"B{B} H{H} S{S} D{D} {'causal' if causal else 'full'} bf16",
               lambda: gptcore.attention(q, k, v, causal=causal), sdpa_flash, "sdpa flash",
               _attention_flops(B, H, S, S, D, causal))
    # fp32 under both policies against SDPA's fp32 (efficient-attention kernel) under the same
    q, k, v = (torch.randn(4, 8, 1024, 64, device="cuda") for _ in range(3))
    for setting in ("highest",) if quick else ("highest", "high"):
        torch.set_float32_matmul_precision(setting)
        _timed("attention", f"B4 H8 S1024 D64 causal fp32 ({setting})",
               lambda: gptcore.attention(q, k, v, causal=True),
               lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), "sdpa",
               _attention_flops(4, 8, 1024, 1024, 64, True))
    torch.set_float32_matmul_precision("highest")
    if quick:
        return
    # sliding window 128 and gpt-oss (sinks) against compiled FlexAttention
    S, W = 8192, 128
    q, k, v = (torch.randn(1, 8, S, 64, device="cuda", dtype=bf16) for _ in range(3))
    band = create_block_mask(lambda b, h, i, j: (j <= i) & (i - j < W), None, None, S, S)
    flex(q, k, v, block_mask=band)                      # compile outside the timing
    _timed("attention", f"B1 H8 S{S} D64 causal window {W}",
           lambda: gptcore.attention(q, k, v, causal=True, window=W),
           lambda: flex(q, k, v, block_mask=band), "compiled flex",
           _attention_flops(1, 8, S, S, 64, True, W))
    _gpt_oss_attention(flex, create_block_mask)
    # decode: one query row against an 8192-token cache, GQA 32/8 (bandwidth-bound)
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=bf16)
    k, v = (torch.randn(1, 8, 8192, 128, device="cuda", dtype=bf16) for _ in range(2))
    _timed("attention", "decode Sq1 Sk8192 Hq32 Hkv8 D128",
           lambda: gptcore.attention(q, k, v, causal=True),
           lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), "sdpa gqa",
           _attention_flops(1, 32, 1, 8192, 128, False))


def _gpt_oss_attention(flex, create_block_mask):
    """gpt-oss layers (Hq64 Hkv8 D64, learned sinks) against compiled FlexAttention with the sink
    as one extra key of value zero whose score is the sink (flex has no sink argument)."""
    S = 2048
    q = torch.randn(1, 64, S, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, S, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    sinks = torch.randn(64, device="cuda")
    k1 = torch.cat([k, k.new_zeros(1, 8, 1, 64)], dim=2)
    v1 = torch.cat([v, v.new_zeros(1, 8, 1, 64)], dim=2)

    def sink_score(score, b, h, qi, kj):
        return torch.where(kj == S, sinks[h].to(score.dtype), score)
    for window in (128, None):
        def visible(b, h, i, j, window=window):
            inside = (j <= i) if window is None else (j <= i) & (i - j < window)
            return inside | (j == S)
        mask = create_block_mask(visible, None, None, S, S + 1)
        flex(q, k1, v1, score_mod=sink_score, block_mask=mask, enable_gqa=True)
        _timed("attention", f"gpt-oss Hq64 Hkv8 S{S} D64 sinks "
               + ("causal" if window is None else f"window {window}"),
               lambda: gptcore.attention(q, k, v, causal=True, window=window,
                                         sinks=sinks.bfloat16()),
               lambda: flex(q, k1, v1, score_mod=sink_score, block_mask=mask, enable_gqa=True),
               "compiled flex+sink key", _attention_flops(1, 64, S, S, 64, True, window))


def _torch_experts(x, indices, weights, gate_up, down):
    """The plain-PyTorch peer: one GEMM pair per expert over the tokens routed to it."""
    out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    for e in range(gate_up.shape[0]):
        tok, slot = torch.where(indices == e)
        gate, up = (x[tok] @ gate_up[e].t()).chunk(2, dim=-1)
        y = (torch.nn.functional.silu(gate) * up) @ down[e].t()
        out.index_add_(0, tok, y.float() * weights[tok, slot, None])
    return out.to(x.dtype)


def _vllm_fused_experts():
    try:
        from vllm.model_executor.layers.fused_moe import fused_experts
    except Exception:                         # not installed, or it fails to import here
        return None
    return fused_experts


def moe(quick):
    fused = _vllm_fused_experts()
    shapes = [(16, 1024, 2816, 8, 2), (512, 1024, 2816, 8, 2), (16, 2880, 2880, 32, 4),
              (4096, 4096, 14336, 8, 2)]
    for T, H, I, E, k in shapes[:2] if quick else shapes:
        x = torch.randn(T, H, device="cuda", dtype=torch.bfloat16)
        gate_up = torch.randn(E, 2 * I, H, device="cuda", dtype=torch.bfloat16) / H ** 0.5
        down = torch.randn(E, H, I, device="cuda", dtype=torch.bfloat16) / I ** 0.5
        weights, indices = gptcore.route(torch.randn(T, E, device="cuda"), k)
        case = f"experts T{T} H{H} I{I} E{E} k{k} bf16"
        flops = 2 * T * k * 3 * H * I

        def ours():
            return gptcore.moe_experts(x, indices, weights, gate_up, down)
        _timed("moe", case, ours, lambda: _torch_experts(x, indices, weights, gate_up, down),
               "torch loop", flops)
        if fused is not None:
            w, ids = weights.to(x.dtype), indices.to(torch.int32)
            _timed("moe", case, ours, lambda: fused(x, gate_up, down, w, ids),
                   "vllm fused_moe", flops)
    if fused is None:
        emit({"op": "moe", "note": "vLLM is not installed: no fused_moe row"})


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="One GPU stage of bench/gpu_check.py.")
    parser.add_argument("stage", choices=("environment", "smoke", "attention", "moe"))
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_check_bench.py {args.stage}: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.set_default_device("cuda")
    {"environment": environment, "smoke": smoke, "attention": lambda: attention(args.quick),
     "moe": lambda: moe(args.quick)}[args.stage]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
