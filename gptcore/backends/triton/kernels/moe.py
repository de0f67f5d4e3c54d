"""Triton MoE: tile configs as data and the launchers of the routing, dispatch-index and grouped
GEMM kernels (moe_route.py, moe_gemm.py). Forward: build the index, GEMM 1
(gather, gate/up, GLU epilogue) -> (rows, I), GEMM 2 (down, bias, routing weight) -> one row per
token slot, then a sum over the k slots of each token (fixed order: deterministic, no atomics).
Backward recomputes GEMM 1 and runs the same kernels transposed.
"""
import os

import torch
import triton

from . import moe_gemm as gemm
from . import precision
from .moe_route import build_index, route, route_bwd  # noqa: F401  (re-exported launchers)

# Tile configs keyed on (T bucket, H, I, E); a shape not listed uses its bucket's default
# (None). The bucket follows the rows an expert gets on average, T*k/E, since each expert's rows
# are padded to BLOCK_M: "decode" <= 16 (one 16-row block; Mixtral and gpt-oss up to T = 64),
# "mid" <= 128, "large" beyond. Every entry compiles for sm_80 and sm_90 with no spill
# (tests/test_aot.py). Measured there: 128x128x64 tiles spilled (STACK 120-384 bytes) at 8
# warps in every GEMM, so the large tile is 128x64; GEMM 1 holds two accumulators (gate, up).
_DECODE = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3)
_MID = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3)
_LARGE = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, num_warps=8, num_stages=3)
CONFIGS = {
    ("decode", None, None, None): _DECODE,
    ("mid", None, None, None): _MID,
    ("large", None, None, None): _LARGE,
    # gpt-oss-20b decode: at T = 1 only 4 experts work; 32-wide N tiles give each of them
    # 2880/32 = 90 column programs (360 in all, not 180) for 132 SMs
    ("decode", 2880, 2880, 32): dict(_DECODE, BLOCK_N=32),
    # Mixtral-8x7B: 14336 = 224 * 64 and 4096 = 64 * 64: no ragged tiles at all
    ("large", 4096, 14336, 8): _LARGE,
}
# Backward GEMMs: the GLU-backward epilogue loads the fp32 pre-activations beside the
# accumulator and spilled at 64x64 (STACK 8-72 bytes); 64x32 does not. One BLOCK_M per call,
# since every kernel of the backward shares one dispatch index.
BACKWARD_CONFIGS = {
    "decode": _DECODE,
    "mid": dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=3),
    "large": dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=3),
}
# Weight-gradient tiles: rows walked BLOCK_M at a time, (BLOCK_N, BLOCK_K) of dW per program.
WGRAD_CONFIG = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3)
# The interpreter runs programs one by one in NumPy: one small config (tl.dot needs >= 16).
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


def t_bucket(T, top_k, E):
    rows_per_expert = T * top_k / E
    return "decode" if rows_per_expert <= 16 else "mid" if rows_per_expert <= 128 else "large"


def config(T, top_k, H, I, E, backward=False, mxfp4_fp32=False):
    """Tile config for a layer (H, I, E) at T tokens routed to top_k experts each."""
    if _interpreting():
        return INTERPRET_CONFIG
    bucket = t_bucket(T, top_k, E)
    if backward:
        return BACKWARD_CONFIGS[bucket]
    if mxfp4_fp32 and bucket == "large":
        # MXFP4 weights with fp32 activations: the large tile's down GEMM spilled 8 bytes on
        # sm80 (aot.py); the mid tile does not.
        bucket = "mid"
    return CONFIGS.get((bucket, H, I, E), CONFIGS[(bucket, None, None, None)])


def _wgrad_config():
    return INTERPRET_CONFIG if _interpreting() else WGRAD_CONFIG


def _launch_meta(cfg):
    return {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")}


def _gate_up(x, index, gate_up, gate_up_scales, bias, top_k, activation, alpha, limit, cfg,
             store_pre, mxfp4=False):
    """GEMM 1 -> act (rows, I) in x's dtype [, pre (rows, 2I) fp32]. Float weights are read
    through their strides (gpt-oss's K-major (E, H, 2I) storage in place, no copy)."""
    _, sorted_slots, block_expert = index
    T, H = x.shape
    I = gate_up.shape[1] // 2
    rows = sorted_slots.numel()
    act = x.new_empty(rows, I)
    pre = torch.empty(rows, 2 * I, device=x.device, dtype=torch.float32) if store_pre else act
    grid = (block_expert.numel(), triton.cdiv(I, cfg["BLOCK_N"]))
    gemm._gate_up_kernel[grid](
        x, gate_up, gate_up_scales if mxfp4 else gate_up,
        bias.contiguous() if bias is not None else x,
        sorted_slots, block_expert, act, pre, T * top_k, H, I, *gate_up.stride(), alpha, limit,
        TOP_K=top_k, ACTIVATION=gemm.ACTIVATIONS[activation], HAS_BIAS=bias is not None,
        STORE_PRE=store_pre, MXFP4=mxfp4, DOT_PRECISION=precision.dot_precision(x.dtype),
        **_launch_meta(cfg))
    return act, pre


def _gemm(a, b, b_scales, bias, rw, index, top_k, N, K, b_strides, out, cfg, *, a_by_token,
          c_by_slot, scale_rows, epilogue="store", dy=None, pre=None, activation="silu",
          alpha=0.0, limit=0.0, mxfp4=False):
    """Launches the generic grouped GEMM (see _grouped_gemm_kernel) into `out`."""
    _, sorted_slots, block_expert = index
    grid = (block_expert.numel(), triton.cdiv(N, cfg["BLOCK_N"]))
    gemm._grouped_gemm_kernel[grid](
        a, b, b_scales if mxfp4 else b, bias.contiguous() if bias is not None else out, rw,
        dy if dy is not None else out, pre if pre is not None else out, out,
        sorted_slots, block_expert, rw.numel(), N, K, *b_strides, out.stride(0), alpha, limit,
        TOP_K=top_k, A_BY_TOKEN=a_by_token, C_BY_SLOT=c_by_slot, HAS_BIAS=bias is not None,
        SCALE_ROWS=scale_rows, EPILOGUE=gemm.EPILOGUES[epilogue],
        ACTIVATION=gemm.ACTIVATIONS[activation], MXFP4=mxfp4,
        DOT_PRECISION=precision.dot_precision(a.dtype), **_launch_meta(cfg))


def _index(indices, E, cfg):
    sorted_slots, offsets, block_expert = build_index(indices, E, cfg["BLOCK_M"])
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
    cfg = config(T, top_k, H, I, E, mxfp4_fp32=mxfp4 and x.dtype == torch.float32)
    index = _index(indices, E, cfg)
    # MXFP4 blocks come contiguous (experts_mxfp4); float weights are read through their strides
    act, _ = _gate_up(x, index, gate_up, gate_up_scales, gate_up_bias, top_k, activation, alpha,
                      limit, cfg, store_pre=False, mxfp4=mxfp4)
    rw = weights.reshape(-1).float().contiguous()                  # (T*k,)
    per_slot = torch.zeros(T * top_k, H, device=x.device, dtype=torch.float32)
    # down (E, H, I): B[k=i, n=h] = down[e, h, i]
    b_strides = (down.stride(0), down.stride(2), down.stride(1))
    _gemm(act, down, down_scales, down_bias, rw, index, top_k, H, I, b_strides, per_slot, cfg,
          a_by_token=False, c_by_slot=True, scale_rows=True, mxfp4=mxfp4)
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
    x, dy = x.contiguous(), dy.contiguous()       # the weights are read through their strides
    cfg = config(T, top_k, H, I, E, backward=True)
    index = _index(indices, E, cfg)
    offsets, sorted_slots, _ = index
    rw = weights.reshape(-1).float().contiguous()
    num_slots = T * top_k
    act, pre = _gate_up(x, index, gate_up, None, gate_up_bias, top_k, activation, alpha, limit,
                        cfg, store_pre=True)
    # d(gate, up) = GLU'(pre) * (w * dy[token]) @ down[e]: B[k=h, n=i] = down[e, h, i]
    dh = x.new_empty(sorted_slots.numel(), two_i)
    _gemm(dy, down, None, None, rw, index, top_k, I, H, down.stride(), dh, cfg, a_by_token=True,
          c_by_slot=False, scale_rows=True, epilogue="glu_backward", pre=pre,
          activation=activation, alpha=alpha, limit=limit)
    # d weights[slot] = dot(dy[token], act @ down[e]^T + down_bias[e]), partial per column block
    n_blocks = triton.cdiv(H, cfg["BLOCK_N"])
    partial = torch.zeros(num_slots, n_blocks, device=x.device, dtype=torch.float32)
    _gemm(act, down, None, down_bias, rw, index, top_k, H, I,
          (down.stride(0), down.stride(2), down.stride(1)), partial, cfg, a_by_token=False,
          c_by_slot=True, scale_rows=False, epilogue="routing_dot", dy=dy)
    dweights = partial.sum(dim=1).view(T, top_k).to(weights.dtype)
    # dx[token] = sum over its slots of dh[row] @ gate_up[e]: B[k=j, n=h] = gate_up[e, j, h]
    per_slot = torch.zeros(num_slots, H, device=x.device, dtype=torch.float32)
    _gemm(dh, gate_up, None, None, rw, index, top_k, H, two_i, gate_up.stride(), per_slot, cfg,
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
        HAS_BIAS=has_bias, DOT_PRECISION=precision.dot_precision(right.dtype),
        **_launch_meta(cfg))
    return dw, dbias


# ----------------------------------------------------------------------------- AOT specs

# Sizes and strides that are multiples of 16 in every layer we target (H, I of Mixtral and
# gpt-oss), so at run time the JIT specialises them as divisible by 16, as it does pointers.
_DIVISIBLE_INTS = {"H", "I", "N", "K", "stride_be", "stride_bk", "stride_bn", "stride_we",
                   "stride_wn", "stride_wk"}


def _spec(name, fn, types, constexprs, num_warps, num_stages, divisible=_DIVISIBLE_INTS):
    """An aot_specs() entry: every argument typed, pointers from `types`, other names i32.
    "attrs" carries the divisibility hints the JIT derives at run time (as
    triton.tools.compile does); without them the loads compile to scalar ones and spill. A
    stride given in `constexprs` (= 1) is compiled as the constant the JIT makes of it."""
    signature, attrs = {}, {}
    for i, arg in enumerate(fn.arg_names):
        signature[arg] = "constexpr" if arg in constexprs else types.get(arg, "i32")
        if signature[arg].startswith("*") or (arg in divisible and arg not in constexprs):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return dict(name=name, fn=fn, signature=signature, constexprs=constexprs, attrs=attrs,
                num_warps=num_warps, num_stages=num_stages)


def _gemm_specs(tag, cfg, act_dtype, activation, mxfp4, k_major=False):
    """GEMM 1 and GEMM 2 forward (the inference path) under one tile config; float gate_up
    weights row-major (E, 2I, H) (stride_wk = 1) or, `k_major`, gpt-oss's (E, H, 2I) storage
    (stride_wn = 1)."""
    tiles = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    w = "*u8" if mxfp4 else f"*{act_dtype}"
    common = {"sorted_ptr": "*i64", "block_expert_ptr": "*i64", "alpha": "fp32", "limit": "fp32"}
    gate_up = _spec(
        f"moe_gate_up_{tag}", gemm._gate_up_kernel,
        dict(common, x_ptr=f"*{act_dtype}", w_ptr=w, w_scales_ptr="*u8",
             bias_ptr=f"*{act_dtype}", act_ptr=f"*{act_dtype}", pre_ptr="*fp32"),
        dict(TOP_K=4 if activation == "gpt_oss" else 2, ACTIVATION=gemm.ACTIVATIONS[activation],
             HAS_BIAS=activation == "gpt_oss", STORE_PRE=False, MXFP4=mxfp4,
             DOT_PRECISION=precision.DEFAULT, **tiles,
             **({"stride_wn": 1} if k_major else {"stride_wk": 1})),
        cfg["num_warps"], cfg["num_stages"])
    down = _spec(f"moe_down_{tag}", gemm._grouped_gemm_kernel, _generic_types(act_dtype, w),
                 _generic_constexprs(tiles, activation, mxfp4, a_by_token=False, c_by_slot=True,
                                     scale_rows=True, epilogue="store"),
                 cfg["num_warps"], cfg["num_stages"])
    return [gate_up, down]


def _generic_types(act_dtype, w):
    return {"a_ptr": f"*{act_dtype}", "b_ptr": w, "b_scales_ptr": "*u8",
            "bias_ptr": f"*{act_dtype}", "rw_ptr": "*fp32", "dy_ptr": f"*{act_dtype}",
            "pre_ptr": "*fp32", "c_ptr": "*fp32", "sorted_ptr": "*i64",
            "block_expert_ptr": "*i64", "alpha": "fp32", "limit": "fp32"}


def _generic_constexprs(tiles, activation, mxfp4, *, a_by_token, c_by_slot, scale_rows,
                        epilogue):
    return dict(TOP_K=4 if activation == "gpt_oss" else 2, A_BY_TOKEN=a_by_token,
                C_BY_SLOT=c_by_slot, HAS_BIAS=activation == "gpt_oss", SCALE_ROWS=scale_rows,
                EPILOGUE=gemm.EPILOGUES[epilogue], ACTIVATION=gemm.ACTIVATIONS[activation],
                MXFP4=mxfp4, DOT_PRECISION=precision.DEFAULT, **tiles)


def _backward_specs(tag, cfg, act_dtype, activation):
    tiles = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    types = _generic_types(act_dtype, f"*{act_dtype}")
    dh_types = dict(types, c_ptr=f"*{act_dtype}")
    kernel, warps, stages = gemm._grouped_gemm_kernel, cfg["num_warps"], cfg["num_stages"]
    wg = WGRAD_CONFIG
    wg_tiles = {k: wg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    wg_types = {"l_ptr": f"*{act_dtype}", "r_ptr": f"*{act_dtype}", "rw_ptr": "*fp32",
                "sorted_ptr": "*i64", "offsets_ptr": "*i64", "dw_ptr": "*fp32",
                "dbias_ptr": "*fp32"}
    return [
        _spec(f"moe_dgate_up_{tag}", kernel, dh_types, _generic_constexprs(
            tiles, activation, False, a_by_token=True, c_by_slot=False, scale_rows=True,
            epilogue="glu_backward"), warps, stages),
        _spec(f"moe_dweights_{tag}", kernel, types, _generic_constexprs(
            tiles, activation, False, a_by_token=False, c_by_slot=True, scale_rows=False,
            epilogue="routing_dot"), warps, stages),
        _spec(f"moe_dx_{tag}", kernel, types, _generic_constexprs(
            tiles, activation, False, a_by_token=False, c_by_slot=True, scale_rows=False,
            epilogue="store"), warps, stages),
        _spec(f"moe_ddown_{tag}", gemm._grouped_wgrad_kernel, wg_types, dict(
            TOP_K=2, L_BY_TOKEN=True, R_BY_TOKEN=False, SCALE_L=True, HAS_BIAS=True,
            DOT_PRECISION=precision.DEFAULT, **wg_tiles),
            wg["num_warps"], wg["num_stages"]),
        _spec(f"moe_dgate_up_w_{tag}", gemm._grouped_wgrad_kernel, wg_types, dict(
            TOP_K=2, L_BY_TOKEN=False, R_BY_TOKEN=True, SCALE_L=False, HAS_BIAS=True,
            DOT_PRECISION=precision.DEFAULT, **wg_tiles), wg["num_warps"], wg["num_stages"]),
    ]


def _route_specs():
    from . import moe_route as r
    specs = []
    for E, top_k, mode in ((8, 2, 0), (32, 4, 1), (256, 8, 2)):
        block_e, block_k = triton.next_power_of_2(E), triton.next_power_of_2(top_k)
        block_t = r._route_block_t(E)
        types = {"logits_ptr": "*bf16", "bias_ptr": "*fp32", "weights_ptr": "*fp32",
                 "indices_ptr": "*i64", "dweights_ptr": "*fp32", "dlogits_ptr": "*fp32"}
        shape = dict(TOP_K=top_k, BLOCK_E=block_e, BLOCK_K=block_k)
        specs.append(_spec(f"moe_route_E{E}_k{top_k}", r._route_kernel, types,
                           dict(SCORING_MODE=mode, RENORMALIZE=True, HAS_BIAS=mode == 2,
                                BLOCK_T=block_t, **shape), 4, 1))
        specs.append(_spec(f"moe_route_bwd_E{E}_k{top_k}", r._route_bwd_kernel, types,
                           dict(SCORING_MODE=mode, RENORMALIZE=True,
                                BLOCK_T=max(1, block_t // block_k), **shape), 4, 1))
        index_types = {"indices_ptr": "*i64", "counts_ptr": "*i32", "offsets_ptr": "*i64",
                       "sorted_ptr": "*i64", "block_expert_ptr": "*i64"}
        specs.append(_spec(f"moe_index_scatter_E{E}", r._scatter_kernel, index_types,
                           dict(BLOCK_M=128, BLOCK=1024, BLOCK_E=block_e), 4, 1))
    specs.append(_spec("moe_index_count", r._count_kernel,
                       {"indices_ptr": "*i64", "counts_ptr": "*i32"}, dict(BLOCK=1024), 4, 1))
    return specs


def aot_specs():
    """One entry per GPU kernel config, for the ahead-of-time compile check (aot.py)."""
    specs = _route_specs()
    for (bucket, H, I, E), cfg in CONFIGS.items():
        tag = bucket if H is None else f"{bucket}_H{H}_I{I}_E{E}"
        activation = "gpt_oss" if E == 32 else "silu"
        specs += _gemm_specs(tag, cfg, "bf16", activation, mxfp4=False)
        if E == 32:       # gpt-oss's experts are stored K-major and read in place
            specs += _gemm_specs(f"{tag}_kmajor", cfg, "bf16", activation, False, k_major=True)[:1]
        unproven = ("fp32",) if bucket == "large" else ()       # config(): mid tile instead
        specs += [dict(s, unproven=unproven)
                  for s in _gemm_specs(f"{tag}_mxfp4", cfg, "bf16", "gpt_oss", mxfp4=True)]
    for bucket, cfg in BACKWARD_CONFIGS.items():
        for activation in ("silu", "gpt_oss"):
            specs += _backward_specs(f"{bucket}_{activation}", cfg, "bf16", activation)
    return specs
