"""Triton MoE: tile configs as data and the launchers of the routing, dispatch-index and grouped
GEMM kernels (kernels/moe_route.py, kernels/moe_gemm.py). Forward: build the index, GEMM 1
(gather, gate/up, GLU epilogue) -> (rows, I), GEMM 2 (down, bias, routing weight) -> one row per
token slot, then a sum over the k slots of each token (fixed order: deterministic, no atomics).
Backward recomputes GEMM 1 and runs the same kernels transposed.
"""
import os

import torch
import triton

from . import moe_gemm as gemm
from .moe_route import build_index, route, route_bwd  # noqa: F401  (re-exported launchers)

# Tile configs keyed on (T bucket, H, I, E); a shape not listed uses its bucket's default
# (None). Buckets: "decode" T*k <= 64, "mid" <= 2048, "large" beyond. The two accumulators of
# GEMM 1 at 128x128 need 8 warps to stay below 255 registers (checked by tests/test_aot_moe.py).
_DECODE = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=3)
_MID = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3)
_LARGE = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)
CONFIGS = {
    ("decode", None, None, None): _DECODE,
    ("mid", None, None, None): _MID,
    ("large", None, None, None): _LARGE,
    # gpt-oss-20b: I = 2880 = 45 * 64, so 64-wide N tiles waste nothing on the last tile
    ("large", 2880, 2880, 32): dict(_LARGE, BLOCK_N=64, num_warps=4),
    # Mixtral-8x7B: 14336 = 112 * 128, few experts so each sees T*k/8 rows: big tiles pay
    ("large", 4096, 14336, 8): _LARGE,
}
# Weight-gradient tiles: rows walked BLOCK_M at a time, (BLOCK_N, BLOCK_K) of dW per program.
WGRAD_CONFIG = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3)
# The interpreter runs programs one by one in NumPy: one small config (tl.dot needs >= 16).
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


def t_bucket(num_slots):
    return "decode" if num_slots <= 64 else "mid" if num_slots <= 2048 else "large"


def config(T, top_k, H, I, E):
    """Tile config for a layer (H, I, E) at T tokens routed to top_k experts each."""
    if _interpreting():
        return INTERPRET_CONFIG
    bucket = t_bucket(T * top_k)
    return CONFIGS.get((bucket, H, I, E), CONFIGS[(bucket, None, None, None)])


def _wgrad_config():
    return INTERPRET_CONFIG if _interpreting() else WGRAD_CONFIG


def _launch_meta(cfg):
    return {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")}


def _gate_up(x, index, gate_up, gate_up_scales, bias, top_k, activation, alpha, limit, cfg,
             store_pre, mxfp4=False):
    """GEMM 1 -> act (rows, I) in x's dtype [, pre (rows, 2I) fp32]."""
    _, sorted_slots, block_expert = index
    T, H = x.shape
    I = gate_up.shape[1] // 2
    rows = sorted_slots.numel()
    act = x.new_empty(rows, I)
    pre = torch.empty(rows, 2 * I, device=x.device, dtype=torch.float32) if store_pre else act
    grid = (block_expert.numel(), triton.cdiv(I, cfg["BLOCK_N"]))
    gemm._gate_up_kernel[grid](
        x, gate_up, gate_up_scales if mxfp4 else gate_up, bias if bias is not None else x,
        sorted_slots, block_expert, act, pre, T * top_k, H, I, alpha, limit,
        TOP_K=top_k, ACTIVATION=gemm.ACTIVATIONS[activation], HAS_BIAS=bias is not None,
        STORE_PRE=store_pre, MXFP4=mxfp4, **_launch_meta(cfg))
    return act, pre


def _gemm(a, b, b_scales, bias, rw, index, top_k, N, K, b_strides, out, cfg, *, a_by_token,
          c_by_slot, scale_rows, epilogue=0, dy=None, pre=None, activation="silu", alpha=0.0,
          limit=0.0, mxfp4=False):
    """Launches the generic grouped GEMM (see _grouped_gemm_kernel) into `out`."""
    _, sorted_slots, block_expert = index
    grid = (block_expert.numel(), triton.cdiv(N, cfg["BLOCK_N"]))
    gemm._grouped_gemm_kernel[grid](
        a, b, b_scales if mxfp4 else b, bias if bias is not None else out, rw,
        dy if dy is not None else out, pre if pre is not None else out, out,
        sorted_slots, block_expert, rw.numel(), N, K, *b_strides, out.stride(0), alpha, limit,
        TOP_K=top_k, A_BY_TOKEN=a_by_token, C_BY_SLOT=c_by_slot, HAS_BIAS=bias is not None,
        SCALE_ROWS=scale_rows, EPILOGUE=epilogue, ACTIVATION=gemm.ACTIVATIONS[activation],
        MXFP4=mxfp4, **_launch_meta(cfg))


def _index(indices, E, cfg):
    counts, offsets, sorted_slots, block_expert = build_index(indices, E, cfg["BLOCK_M"])
    return offsets, sorted_slots, block_expert


def _forward(x, indices, weights, gate_up, gate_up_scales, down, down_scales, gate_up_bias,
             down_bias, activation, alpha, limit, mxfp4):
    T, H = x.shape
    top_k = indices.shape[1]
    E, two_i = gate_up.shape[:2]
    I = two_i // 2
    if T == 0:
        return x.new_zeros(T, H)
    x = x.contiguous()
    cfg = config(T, top_k, H, I, E)
    index = _index(indices, E, cfg)
    act, _ = _gate_up(x, index, gate_up.contiguous(), gate_up_scales, gate_up_bias, top_k,
                      activation, alpha, limit, cfg, store_pre=False, mxfp4=mxfp4)
    rw = weights.reshape(-1).float().contiguous()                  # (T*k,)
    per_slot = torch.zeros(T * top_k, H, device=x.device, dtype=torch.float32)
    # down (E, H, I): B[k=i, n=h] = down[e, h, i]
    _gemm(act, down.contiguous(), down_scales, down_bias, rw, index, top_k, H, I,
          (H * I, 1, I), per_slot, cfg, a_by_token=False, c_by_slot=True, scale_rows=True,
          mxfp4=mxfp4)
    return per_slot.view(T, top_k, H).sum(dim=1).to(x.dtype)      # (T, H), fixed order over k


def experts_fwd(x, indices, weights, gate_up, down, gate_up_bias, down_bias, activation, alpha,
                limit):
    """x (T, H), indices/weights (T, k), gate_up (E, 2I, H), down (E, H, I) -> y (T, H)."""
    return _forward(x, indices, weights, gate_up, None, down, None, gate_up_bias, down_bias,
                    activation, alpha, limit, mxfp4=False)


def experts_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks, down_scales,
                  gate_up_bias, down_bias, activation, alpha, limit):
    """As experts_fwd with MXFP4 weights: blocks (E, N, K/2) uint8, scales (E, N, K/32)."""
    return _forward(x, indices, weights, gate_up_blocks, gate_up_scales.contiguous(),
                    down_blocks, down_scales.contiguous(), gate_up_bias, down_bias, activation,
                    alpha, limit, mxfp4=True)


def experts_bwd(dy, x, indices, weights, gate_up, down, gate_up_bias, down_bias, activation,
                alpha, limit):
    """-> (dx, dweights, dgate_up, ddown, dgate_up_bias, ddown_bias); empty for absent biases."""
    T, H = x.shape
    top_k = indices.shape[1]
    E, two_i = gate_up.shape[:2]
    I = two_i // 2
    x, dy, gate_up, down = x.contiguous(), dy.contiguous(), gate_up.contiguous(), down.contiguous()
    cfg = config(T, top_k, H, I, E)
    index = _index(indices, E, cfg)
    offsets, sorted_slots, _ = index
    rw = weights.reshape(-1).float().contiguous()
    num_slots = T * top_k
    act, pre = _gate_up(x, index, gate_up, None, gate_up_bias, top_k, activation, alpha, limit,
                        cfg, store_pre=True)
    # d(gate, up) = GLU'(pre) * (w * dy[token]) @ down[e]: B[k=h, n=i] = down[e, h, i]
    dh = x.new_empty(sorted_slots.numel(), two_i)
    _gemm(dy, down, None, None, rw, index, top_k, I, H, (H * I, I, 1), dh, cfg, a_by_token=True,
          c_by_slot=False, scale_rows=True, epilogue=1, pre=pre, activation=activation,
          alpha=alpha, limit=limit)
    # d weights[slot] = dot(dy[token], act @ down[e]^T + down_bias[e]), partial per column block
    n_blocks = triton.cdiv(H, cfg["BLOCK_N"])
    partial = torch.zeros(num_slots, n_blocks, device=x.device, dtype=torch.float32)
    _gemm(act, down, None, down_bias, rw, index, top_k, H, I, (H * I, 1, I), partial, cfg,
          a_by_token=False, c_by_slot=True, scale_rows=False, epilogue=2, dy=dy)
    dweights = partial.sum(dim=1).view(T, top_k).to(weights.dtype)
    # dx[token] = sum over its slots of dh[row] @ gate_up[e]: B[k=j, n=h] = gate_up[e, j, h]
    per_slot = torch.zeros(num_slots, H, device=x.device, dtype=torch.float32)
    _gemm(dh, gate_up, None, None, rw, index, top_k, H, two_i, (two_i * H, H, 1), per_slot, cfg,
          a_by_token=False, c_by_slot=True, scale_rows=False)
    dx = per_slot.view(T, top_k, H).sum(dim=1).to(x.dtype)
    ddown, ddown_bias = _wgrad(dy, act, rw, sorted_slots, offsets, top_k, E, H, I,
                               l_by_token=True, r_by_token=False, scale_l=True,
                               has_bias=down_bias is not None)
    dgate_up, dgate_up_bias = _wgrad(dh, x, rw, sorted_slots, offsets, top_k, E, two_i, H,
                                     l_by_token=False, r_by_token=True, scale_l=False,
                                     has_bias=gate_up_bias is not None)

    def bias_grad(g, bias):
        return g.to(bias.dtype) if bias is not None else x.new_empty(0)
    return (dx, dweights, dgate_up.to(gate_up.dtype), ddown.to(down.dtype),
            bias_grad(dgate_up_bias, gate_up_bias), bias_grad(ddown_bias, down_bias))


def _wgrad(left, right, rw, sorted_slots, offsets, top_k, E, N, K, *, l_by_token, r_by_token,
           scale_l, has_bias):
    """dW (E, N, K) fp32 = per expert sum of (scale * L)^T R, and dbias (E, N) fp32."""
    cfg = _wgrad_config()
    dw = torch.empty(E, N, K, device=left.device, dtype=torch.float32)
    dbias = torch.empty(E, N, device=left.device, dtype=torch.float32) if has_bias else dw
    grid = (E, triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(K, cfg["BLOCK_K"]))
    gemm._grouped_wgrad_kernel[grid](
        left, right, rw, sorted_slots, offsets, dw, dbias, rw.numel(), N, K,
        TOP_K=top_k, L_BY_TOKEN=l_by_token, R_BY_TOKEN=r_by_token, SCALE_L=scale_l,
        HAS_BIAS=has_bias, **_launch_meta(cfg))
    return dw, dbias
