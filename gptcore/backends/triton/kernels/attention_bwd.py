"""FlashAttention-2 backward (Dao 2023, Algorithm 2 split in two as Triton tutorial 06): a
preprocess computes Delta = rowsum(dO * O) - dlse; one kernel owns a K/V block and walks the Q
blocks (and every query head of its GQA group) that see it, writing dK, dV once; another owns a
Q block and walks its K/V blocks for dQ and the sink gradient. No atomics: deterministic.
"""
import torch
import triton
import triton.language as tl

from . import precision
from .attention_common import (block_d, block_ranges, configs, pruner, scores,
                                              seq_bounds, stride_hints, visible)

# (BLOCK_M, BLOCK_N, num_warps, num_stages, head-dim buckets, specialisations it is not proven
# for), proven spill-free on sm80 and sm90 by aot.py. dK/dV programs keep two
# (BLOCK_N x D) fp32 accumulators, dQ programs one (BLOCK_M x D): tiles shrink as D grows to
# stay in registers. fp32 operands, the softcap's extra tanh terms and (once, on sm80) varlen
# spill the wider ones (8-680 bytes), which then serve the other specialisations only.
DKDV_CONFIGS = [(16, 32, 8, 2, (64, 128), ()), (16, 32, 8, 2, (256,), ("fp32", "softcap")),
                (16, 16, 8, 2, (256,), ()), (16, 64, 8, 2, (64,), ("fp32", "varlen")),
                (16, 64, 8, 2, (128,), ("fp32", "softcap")), (32, 32, 4, 2, (64,), ())]
DQ_CONFIGS = [(128, 32, 8, 3, (64,), ("fp32",)), (64, 32, 4, 3, (64,), ("fp32",)),
              (64, 32, 4, 3, (128,), ("fp32", "softcap")), (64, 32, 8, 2, (64,), ("fp32",)),
              (64, 32, 8, 2, (128,), ()), (16, 32, 4, 2, (64,), ()),
              (32, 32, 4, 2, (256,), ("fp32",)), (64, 16, 8, 2, (256,), ("fp32",)),
              (16, 32, 4, 2, (256,), ())]
INTERPRETER_CONFIG = (16, 16, 4, 1, (64, 128, 256), ())
# Delta = rowsum(O * dO) - dlse, 64 rows a program. 8 warps: with 4, fp32 rows at D64-128 sat
# at ~72 registers with an 8-byte stack frame on sm90; with 8 none of fp16/bf16/fp32 has one.
PREPROCESS_ROWS, PREPROCESS_WARPS = 64, 8
# One dsinks partial per (batch, head, Q tile): sized for the shortest tile any config may pick.
MIN_BLOCK_M = min(c[0] for c in DQ_CONFIGS + [INTERPRETER_CONFIG])


@triton.jit
def attention_bwd_preprocess_kernel(
    Out, DOut, DLse, Delta, CuQ,                    # pointers (DLse, Delta fp32 like lse)
    seq_q, n_heads,                                 # sizes
    sq_b, sq_h, sq_s, sl_b, sl_h, sl_s,             # strides of out/dout and lse/delta
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    q_start, len_q = seq_bounds(CuQ, b, seq_q, IS_VARLEN)
    if pid_m * BLOCK_M >= len_q:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < len_q
    rows = (q_start + offs_m).to(tl.int64)
    o_off = b.to(tl.int64) * sq_b + h.to(tl.int64) * sq_h + rows[:, None] * sq_s + offs_d[None, :]
    ok = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(Out + o_off, mask=ok, other=0.0).to(tl.float32)              # (M, D)
    do = tl.load(DOut + o_off, mask=ok, other=0.0).to(tl.float32)
    l_off = b.to(tl.int64) * sl_b + h.to(tl.int64) * sl_h + rows * sl_s
    dlse = tl.load(DLse + l_off, mask=row_ok, other=0.0)
    tl.store(Delta + l_off, tl.sum(o * do, 1) - dlse, mask=row_ok)


@triton.jit
def _load_lse2(lse_base, rows, row_ok, sl_s):
    """lse in log2 units; +inf for rows that saw nothing or do not exist, so exp2(s - lse) = 0."""
    lse = tl.load(lse_base + rows * sl_s, mask=row_ok, other=float("inf")) * 1.4426950408889634
    return tl.where(lse == float("-inf"), float("inf"), lse)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sq_s, sl_s, cols, shift,
                 start, end, len_q, len_k, left, right, score_scale, cap_scale, offs_m, offs_d,
                 d_ok, MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, BLOCK_M: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    """Adds the Q blocks [start, end) of one query head to dk, dv (N, D), transposed math."""
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + offs_m                                                    # (M,)
        if MASKED:
            row_ok = rows < len_q
        else:
            row_ok = rows >= 0
        qt = tl.load(q_base + rows[None, :] * sq_s + offs_d[:, None],
                     mask=row_ok[None, :] & d_ok[:, None], other=0.0)          # (D, M)
        do = tl.load(do_base + rows[:, None] * sq_s + offs_d[None, :],
                     mask=row_ok[:, None] & d_ok[None, :], other=0.0)          # (M, D)
        lse2 = _load_lse2(lse_base, rows, row_ok, sl_s)
        delta = tl.load(delta_base + rows * sl_s, mask=row_ok, other=0.0)
        st = scores(tl.dot(k, qt, input_precision=DOT_PRECISION), score_scale, cap_scale,
                    HAS_SOFTCAP)                                              # (N, M)
        pt = tl.math.exp2(st - lse2[None, :])
        if MASKED:
            pt = tl.where(visible((rows + shift)[None, :], cols[:, None], len_k, left, right),
                          pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)      # (N, D)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)          # (N, M)
        dst = pt * (dpt - delta[None, :])
        if HAS_SOFTCAP:
            t = st / cap_scale
            dst = dst * (1.0 - t * t)
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def attention_bwd_dkdv_kernel(
    Q, K, V, DOut, Lse, Delta, DK, DV, CuQ, CuK,    # pointers (Lse, Delta fp32)
    seq_q, seq_k, n_kv_heads, group,                # sizes
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s,             # strides of q/dout and k/v/dk/dv
    sl_b, sl_h, sl_s,                               # strides of lse/delta
    sm_scale, score_scale, cap_scale, left, right,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_kv_heads
    hk = bh % n_kv_heads
    q_start, len_q = seq_bounds(CuQ, b, seq_q, IS_VARLEN)
    k_start, len_k = seq_bounds(CuK, b, seq_k, IS_VARLEN)
    if pid_n * BLOCK_N >= len_k:
        return
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)                            # (N,)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    kv_ok = (cols < len_k)[:, None] & d_ok[None, :]
    b64 = b.to(tl.int64)
    kv_off = (b64 * sk_b + hk.to(tl.int64) * sk_h + k_start.to(tl.int64) * sk_s
              + cols[:, None] * sk_s + offs_d[None, :])                       # (N, D)
    k = tl.load(K + kv_off, mask=kv_ok, other=0.0)
    v = tl.load(V + kv_off, mask=kv_ok, other=0.0)

    # Query row i sees key j iff j - shift - right <= i <= j - shift + left.
    shift = len_k - len_q
    last = tl.minimum(pid_n * BLOCK_N + BLOCK_N, len_k) - 1
    start, full_lo, full_hi, end = block_ranges(pid_n * BLOCK_N - shift, last - shift, right, left,
                                                len_q * 0, len_q, BLOCK_M)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for g in range(0, group):                   # GQA: the group's query heads share this K/V
        h = (hk * group + g).to(tl.int64)
        q_off = b64 * sq_b + h * sq_h + q_start.to(tl.int64) * sq_s
        l_off = b64 * sl_b + h * sl_h + q_start.to(tl.int64) * sl_s
        dk, dv = _dkdv_blocks(dk, dv, k, v, Q + q_off, DOut + q_off, Lse + l_off, Delta + l_off,
                              sq_s, sl_s, cols, shift, start, full_lo, len_q, len_k, left, right,
                              score_scale, cap_scale, offs_m, offs_d, d_ok, True, HAS_SOFTCAP,
                              BLOCK_M, DOT_PRECISION)
        dk, dv = _dkdv_blocks(dk, dv, k, v, Q + q_off, DOut + q_off, Lse + l_off, Delta + l_off,
                              sq_s, sl_s, cols, shift, full_lo, full_hi, len_q, len_k, left, right,
                              score_scale, cap_scale, offs_m, offs_d, d_ok, False, HAS_SOFTCAP,
                              BLOCK_M, DOT_PRECISION)
        dk, dv = _dkdv_blocks(dk, dv, k, v, Q + q_off, DOut + q_off, Lse + l_off, Delta + l_off,
                              sq_s, sl_s, cols, shift, full_hi, end, len_q, len_k, left, right,
                              score_scale, cap_scale, offs_m, offs_d, d_ok, True, HAS_SOFTCAP,
                              BLOCK_M, DOT_PRECISION)
    tl.store(DK + kv_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _dq_blocks(dq, q, do, lse2, delta, k_base, v_base, sk_s, pos, start, end, len_k, left, right,
               score_scale, cap_scale, offs_n, offs_d, d_ok,
               MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, BLOCK_N: tl.constexpr,
               DOT_PRECISION: tl.constexpr):
    """Adds the K/V blocks [start, end) to dq (M, D)."""
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + offs_n
        if MASKED:
            col_ok = cols < len_k
        else:
            col_ok = cols >= 0
        tile_ok = col_ok[None, :] & d_ok[:, None]
        kt = tl.load(k_base + cols[None, :] * sk_s + offs_d[:, None], mask=tile_ok, other=0.0)
        vt = tl.load(v_base + cols[None, :] * sk_s + offs_d[:, None], mask=tile_ok, other=0.0)
        s = scores(tl.dot(q, kt, input_precision=DOT_PRECISION), score_scale, cap_scale,
                   HAS_SOFTCAP)                                               # (M, N)
        p = tl.math.exp2(s - lse2[:, None])
        if MASKED:
            p = tl.where(visible(pos[:, None], cols[None, :], len_k, left, right), p, 0.0)
        ds = p * (tl.dot(do, vt, input_precision=DOT_PRECISION) - delta[:, None])
        if HAS_SOFTCAP:
            t = s / cap_scale
            ds = ds * (1.0 - t * t)
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=DOT_PRECISION)  # (M, D)
    return dq


@triton.jit
def attention_bwd_dq_kernel(
    Q, K, V, DOut, Lse, Delta, Sinks, DQ, DSinkPart, CuQ, CuK,   # pointers
    seq_q, seq_k, n_heads, group, dsink_stride,                 # sizes
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sl_b, sl_h, sl_s,       # strides
    sm_scale, score_scale, cap_scale, left, right,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SINKS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, IS_VARLEN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    q_start, len_q = seq_bounds(CuQ, b, seq_q, IS_VARLEN)
    k_start, len_k = seq_bounds(CuK, b, seq_k, IS_VARLEN)
    if pid_m * BLOCK_M >= len_q:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < len_q
    b64 = b.to(tl.int64)
    q_off = (b64 * sq_b + h.to(tl.int64) * sq_h + q_start.to(tl.int64) * sq_s
             + offs_m[:, None] * sq_s + offs_d[None, :])                      # (M, D)
    tile_ok = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + q_off, mask=tile_ok, other=0.0)
    do = tl.load(DOut + q_off, mask=tile_ok, other=0.0)
    l_base = b64 * sl_b + h.to(tl.int64) * sl_h + q_start.to(tl.int64) * sl_s
    lse2 = _load_lse2(Lse + l_base, offs_m, row_ok, sl_s)
    delta = tl.load(Delta + l_base + offs_m * sl_s, mask=row_ok, other=0.0)
    kv_off = b64 * sk_b + (h // group).to(tl.int64) * sk_h + k_start.to(tl.int64) * sk_s

    shift = len_k - len_q
    pos = offs_m + shift
    last = tl.minimum(pid_m * BLOCK_M + BLOCK_M, len_q) - 1
    start, full_lo, full_hi, end = block_ranges(pid_m * BLOCK_M + shift, last + shift, left, right,
                                                len_k * 0, len_k, BLOCK_N)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dq = _dq_blocks(dq, q, do, lse2, delta, K + kv_off, V + kv_off, sk_s, pos, start, full_lo,
                    len_k, left, right, score_scale, cap_scale, offs_n, offs_d, d_ok, True,
                    HAS_SOFTCAP, BLOCK_N, DOT_PRECISION)
    dq = _dq_blocks(dq, q, do, lse2, delta, K + kv_off, V + kv_off, sk_s, pos, full_lo, full_hi,
                    len_k, left, right, score_scale, cap_scale, offs_n, offs_d, d_ok, False,
                    HAS_SOFTCAP, BLOCK_N, DOT_PRECISION)
    dq = _dq_blocks(dq, q, do, lse2, delta, K + kv_off, V + kv_off, sk_s, pos, full_hi, end,
                    len_k, left, right, score_scale, cap_scale, offs_n, offs_d, d_ok, True,
                    HAS_SOFTCAP, BLOCK_N, DOT_PRECISION)
    tl.store(DQ + q_off, (dq * sm_scale).to(DQ.dtype.element_ty), mask=tile_ok)
    if HAS_SINKS:
        # d sink = -sum_rows P_sink * Delta, P_sink = exp(sink - lse): one partial per program.
        p_sink = tl.math.exp2(tl.load(Sinks + h).to(tl.float32) * 1.4426950408889634 - lse2)
        part = -tl.sum(tl.where(row_ok, p_sink * delta, 0.0), 0)
        tl.store(DSinkPart + bh.to(tl.int64) * dsink_stride + pid_m, part)


attention_bwd_dkdv_tuned = triton.autotune(
    configs(DKDV_CONFIGS, INTERPRETER_CONFIG),
    key=["HEAD_DIM", "HAS_SOFTCAP", "IS_VARLEN", "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": pruner(DKDV_CONFIGS)})(attention_bwd_dkdv_kernel)
attention_bwd_dq_tuned = triton.autotune(
    configs(DQ_CONFIGS, INTERPRETER_CONFIG),
    key=["HEAD_DIM", "HAS_SINKS", "HAS_SOFTCAP", "IS_VARLEN", "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": pruner(DQ_CONFIGS)})(attention_bwd_dq_kernel)


def launch(dout, dlse, q, k, v, out, lse, sinks, dq, dk, dv, cu_q, cu_k, sizes, q_strides,
           kv_strides, lse_strides, sm_scale, score_scale, cap_scale, left, right, softcap):
    """Fills dq, dk, dv; returns dsinks (fp32 (heads,)) or None. sizes = (batch, heads,
    kv_heads, seq_q, seq_k, max_seq_q, max_seq_k); all tensors contiguous."""
    batch, heads, kv_heads, seq_q, seq_k, max_seq_q, max_seq_k = sizes
    D = q.shape[-1]
    group = heads // kv_heads
    varlen = cu_q is not None
    cu_q = cu_q if varlen else lse
    cu_k = cu_k if varlen else lse
    meta = dict(HEAD_DIM=D, BLOCK_D=block_d(D), HAS_SOFTCAP=softcap > 0, IS_VARLEN=varlen,
                DOT_PRECISION=precision.dot_precision(q.dtype))
    delta = torch.empty_like(lse)
    attention_bwd_preprocess_kernel[(triton.cdiv(max_seq_q, PREPROCESS_ROWS), batch * heads)](
        out, dout, dlse, delta, cu_q, seq_q, heads, *q_strides, *lse_strides,
        HEAD_DIM=D, BLOCK_D=block_d(D), BLOCK_M=PREPROCESS_ROWS, IS_VARLEN=varlen,
        num_warps=PREPROCESS_WARPS)

    def kv_grid(cfg):
        return triton.cdiv(max_seq_k, cfg["BLOCK_N"]), batch * kv_heads

    attention_bwd_dkdv_tuned[kv_grid](
        q, k, v, dout, lse, delta, dk, dv, cu_q, cu_k, seq_q, seq_k, kv_heads, group,
        *q_strides, *kv_strides, *lse_strides, sm_scale, score_scale, cap_scale, left, right,
        **meta)
    n_m = triton.cdiv(max_seq_q, MIN_BLOCK_M)
    dsink_part = torch.zeros(batch, heads, n_m, device=q.device, dtype=torch.float32)

    def q_grid(cfg):
        return triton.cdiv(max_seq_q, cfg["BLOCK_M"]), batch * heads

    attention_bwd_dq_tuned[q_grid](
        q, k, v, dout, lse, delta, sinks if sinks is not None else lse, dq, dsink_part, cu_q,
        cu_k, seq_q, seq_k, heads, group, n_m, *q_strides, *kv_strides, *lse_strides, sm_scale,
        score_scale, cap_scale, left, right, HAS_SINKS=sinks is not None, **meta)
    return dsink_part.sum(dim=(0, 2)) if sinks is not None else None


def aot_specs():
    """Preprocess, dK/dV and dQ kernels in each GPU config at each head dim it serves (bf16)."""
    ints = ["seq_q", "seq_k", "group", "sq_b", "sq_h", "sq_s", "sk_b", "sk_h", "sk_s", "sl_b",
            "sl_h", "sl_s", "left", "right"]
    floats = ["sm_scale", "score_scale", "cap_scale"]
    specs = [_spec(attention_bwd_preprocess_kernel, f"attention_bwd_preprocess_d{D}",
                   ["Out", "DOut"], ["DLse", "Delta"],
                   ["seq_q", "n_heads", "sq_b", "sq_h", "sq_s", "sl_b", "sl_h", "sl_s"],
                   dict(HEAD_DIM=D, BLOCK_D=D, BLOCK_M=PREPROCESS_ROWS, IS_VARLEN=False),
                   PREPROCESS_WARPS, 1)
             for D in (64, 128, 256)]
    for m, n, w, s, dims, unproven in DKDV_CONFIGS:
        specs += [dict(_spec(attention_bwd_dkdv_kernel, f"attention_bwd_dkdv_d{D}_m{m}_n{n}_w{w}_s{s}",
                        ["Q", "K", "V", "DOut", "DK", "DV"], ["Lse", "Delta"],
                        ints + ["n_kv_heads"],
                        dict(HEAD_DIM=D, BLOCK_D=D, BLOCK_M=m, BLOCK_N=n, HAS_SOFTCAP=False,
                             IS_VARLEN=False, DOT_PRECISION=precision.DEFAULT), w, s, floats),
                       unproven=unproven) for D in dims]
    for m, n, w, s, dims, unproven in DQ_CONFIGS:
        specs += [dict(_spec(attention_bwd_dq_kernel, f"attention_bwd_dq_d{D}_m{m}_n{n}_w{w}_s{s}",
                        ["Q", "K", "V", "DOut", "Sinks", "DQ"], ["Lse", "Delta", "DSinkPart"],
                        ints + ["n_heads", "dsink_stride"],
                        dict(HEAD_DIM=D, BLOCK_D=D, BLOCK_M=m, BLOCK_N=n, HAS_SINKS=True,
                             HAS_SOFTCAP=False, IS_VARLEN=False,
                             DOT_PRECISION=precision.DEFAULT), w, s, floats),
                       unproven=unproven) for D in dims]
    return specs


def _spec(fn, name, bf16_ptrs, fp32_ptrs, ints, constexprs, warps, stages, floats=()):
    """AOT spec: signature in the kernel's argument order from the kinds of each argument."""
    kinds = {n: "*bf16" for n in bf16_ptrs}
    kinds.update({n: "*fp32" for n in fp32_ptrs})
    kinds.update({n: "*i32" for n in ("CuQ", "CuK")})
    kinds.update({n: "i32" for n in ints})
    kinds.update({n: "fp32" for n in floats})
    kinds.update({n: "constexpr" for n in constexprs})
    sig = {n: kinds[n] for n in fn.arg_names}
    return {"name": name, "fn": fn, "signature": sig, "constexprs": constexprs,
            "hints": stride_hints(fn.arg_names), "num_warps": warps, "num_stages": stages}
