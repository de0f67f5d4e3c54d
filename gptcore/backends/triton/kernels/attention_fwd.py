"""FlashAttention-2 forward (Dao 2023): one program per (Q tile, batch x head), K/V tiles streamed,
online softmax in fp32 with exp2, out and lse written once. The same kernel serves dense and
packed (varlen) sequences, and with SPLIT=True one slice of the keys of a split-KV decode.
"""
import triton
import triton.language as tl

from . import precision
from .attention_common import (block_d, block_ranges, configs, interpreting,
                                              pruner, scores, seq_bounds, stride_hints, visible)

# (BLOCK_M, BLOCK_N, num_warps, num_stages, head-dim buckets, specialisations it is not proven
# for), proven by aot.py: no spill on sm80 and sm90. FA2 uses 128x128 tiles at D64 and
# 128x64 at D128; ours spill at D128 above 64x64 and at D256 above 64x32 with 8 warps
# (accumulator + Q tile + scores exceed 255 registers: 40 bytes spilled at D128 128x64, 8
# warps, sm80). fp32 operands (tf32) hold twice the bytes: 72-224 bytes spilled on sm90 at the
# widest tile of each head dim, so fp32 runs the narrower ones.
GPU_CONFIGS = [
    (128, 128, 8, 3, (64,), ("fp32",)), (128, 64, 8, 3, (64,), ("fp32",)), (64, 64, 4, 3, (64,), ()),
    (64, 64, 8, 2, (128,), ("fp32",)), (64, 32, 8, 2, (64, 128), ()),
    (64, 32, 8, 2, (256,), ("fp32",)), (32, 32, 4, 2, (256,), ()),
]
# The interpreter runs programs one after another: small tiles keep many blocks per test shape.
INTERPRETER_CONFIG = (16, 16, 4, 1, (64, 128, 256), ())


def prune(cfgs, named_args, **kwargs):
    """Proven tiles for the head dim, no taller than the (padded) query length if possible."""
    kept = pruner(GPU_CONFIGS)(cfgs, named_args, **kwargs)
    rows = triton.next_power_of_2(max(int(named_args["max_seq_q"]), 1))
    return [c for c in kept if c.kwargs["BLOCK_M"] <= max(rows, 64)] or kept


@triton.jit
def _fwd_blocks(acc, m_i, l_i, q, k_base, v_base, stride_ks, pos, start, end, seq_k, left, right,
                score_scale, cap_scale, offs_n, offs_d, d_ok,
                MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, BLOCK_N: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """Online softmax over key blocks [start, end): acc (M, D), m_i, l_i (M,) in log2 units."""
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + offs_n                                                    # (N,)
        if MASKED:
            kv_ok = cols < seq_k
        else:
            kv_ok = cols >= 0                    # every key of an unmasked block exists
        kt = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None],
                     mask=kv_ok[None, :] & d_ok[:, None], other=0.0)           # (D, N)
        s = scores(tl.dot(q, kt, input_precision=DOT_PRECISION), score_scale, cap_scale,
                   HAS_SOFTCAP)                                               # (M, N)
        if MASKED:
            s = tl.where(visible(pos[:, None], cols[None, :], seq_k, left, right), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)   # row sees nothing yet: no NaN
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_ks + offs_d[None, :],
                    mask=kv_ok[:, None] & d_ok[None, :], other=0.0)            # (N, D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def attention_fwd_kernel(
    Q, K, V, Sinks, Out, Lse, CuQ, CuK,             # pointers (Out/Lse: fp32 partials if SPLIT)
    seq_q, seq_k, max_seq_q, n_heads, group,        # sizes (seq_*: dense lengths)
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s,             # strides of q/out and k/v (D contiguous)
    sl_b, sl_h, sl_s,                               # strides of lse
    split_o, split_lse, split_len,                  # split-KV: partial strides, keys per split
    score_scale, cap_scale, left, right,            # log2-domain scales, window (-1 unbounded)
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_SINKS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, IS_VARLEN: tl.constexpr,
    SPLIT: tl.constexpr, PACK_GQA: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    if PACK_GQA:
        # Decode: the rows of a tile are (query, head of the GQA group) pairs, so one program
        # streams its kv head's K/V once for the whole group (as flash-attn's split-KV decode).
        b = bh // (n_heads // group)
        h = bh % (n_heads // group)                                           # the kv head
    else:
        b = bh // n_heads
        h = bh % n_heads
    q_start, len_q = seq_bounds(CuQ, b, seq_q, IS_VARLEN)
    k_start, len_k = seq_bounds(CuK, b, seq_k, IS_VARLEN)
    n_rows = len_q
    if PACK_GQA:
        n_rows = len_q * group
    if pid_m * BLOCK_M >= n_rows:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                          # (M,)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < n_rows
    last = tl.minimum(pid_m * BLOCK_M + BLOCK_M, n_rows) - 1
    b64 = b.to(tl.int64)
    if PACK_GQA:
        rows = offs_m // group                                                # query row
        heads = (h * group + offs_m % group).to(tl.int64)                     # query head
        first_row = pid_m * BLOCK_M // group
        last_row = last // group
        kv_head = h
        q_head = b64 * 0                         # the head varies by row: in q_row / l_row
        l_head = b64 * 0
        q_row = heads * sq_h + rows * sq_s                                    # (M,)
        l_row = heads * sl_h + rows * sl_s
    else:
        rows = offs_m
        first_row = pid_m * BLOCK_M
        last_row = last
        kv_head = h // group
        q_head = h.to(tl.int64) * sq_h
        l_head = h.to(tl.int64) * sl_h
        q_row = offs_m * sq_s                    # int32 row offsets: fewer registers than int64
        l_row = offs_m * sl_s
    q_base = Q + b64 * sq_b + q_head + q_start.to(tl.int64) * sq_s
    kv_off = b64 * sk_b + kv_head.to(tl.int64) * sk_h + k_start.to(tl.int64) * sk_s
    q = tl.load(q_base + q_row[:, None] + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)                # (M, D)

    shift = len_k - len_q                        # bottom-right alignment: position = row + shift
    pos = rows + shift
    k_begin = len_k * 0
    k_end = len_k
    if SPLIT:
        k_begin = tl.program_id(2) * split_len
        k_end = tl.minimum(k_begin + split_len, len_k)
    start, full_lo, full_hi, end = block_ranges(first_row + shift, last_row + shift, left, right,
                                                k_begin, k_end, BLOCK_N)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    if HAS_SINKS and not SPLIT:
        # The sink is one more logit (unscaled) in every row's softmax, with no value.
        sink = tl.load(Sinks + h).to(tl.float32) * 1.4426950408889634              # log2 units
        m_i = tl.zeros([BLOCK_M], tl.float32) + sink
        l_i += 1.0
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc, m_i, l_i = _fwd_blocks(acc, m_i, l_i, q, K + kv_off, V + kv_off, sk_s, pos, start, full_lo,
                                len_k, left, right, score_scale, cap_scale, offs_n, offs_d, d_ok,
                                True, HAS_SOFTCAP, BLOCK_N, DOT_PRECISION)
    acc, m_i, l_i = _fwd_blocks(acc, m_i, l_i, q, K + kv_off, V + kv_off, sk_s, pos, full_lo,
                                full_hi, len_k, left, right, score_scale, cap_scale, offs_n, offs_d,
                                d_ok, False, HAS_SOFTCAP, BLOCK_N, DOT_PRECISION)
    acc, m_i, l_i = _fwd_blocks(acc, m_i, l_i, q, K + kv_off, V + kv_off, sk_s, pos, full_hi, end,
                                len_k, left, right, score_scale, cap_scale, offs_n, offs_d, d_ok,
                                True, HAS_SOFTCAP, BLOCK_N, DOT_PRECISION)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)                  # rows that see nothing: m_i = -inf
    lse = (m_i + tl.math.log2(l_safe)) * 0.6931471805599453  # natural log; -inf if nothing seen
    out = acc / l_safe[:, None]                              # and zeros
    o_base = Out + b64 * sq_b + q_head + q_start.to(tl.int64) * sq_s
    l_base = Lse + b64 * sl_b + l_head + q_start.to(tl.int64) * sl_s
    if SPLIT:
        o_base += tl.program_id(2).to(tl.int64) * split_o
        l_base += tl.program_id(2).to(tl.int64) * split_lse
    tl.store(o_base + q_row[:, None] + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    tl.store(l_base + l_row, lse, mask=row_ok)


attention_fwd_tuned = triton.autotune(
    configs(GPU_CONFIGS, INTERPRETER_CONFIG), key=["HEAD_DIM", "HAS_SOFTCAP", "IS_VARLEN",
                                                  "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": prune})(attention_fwd_kernel)


def launch(q, k, v, sinks, out, lse, cu_q, cu_k, sizes, q_strides, kv_strides, lse_strides,
           score_scale, cap_scale, left, right, softcap, split=None):
    """Launches the forward. sizes = (batch, heads, group, seq_q, seq_k, max_seq_q). With
    split = (n_splits, keys per split, block_m, block_n, warps, out split stride, lse split
    stride), `out` and `lse` are the fp32 partial buffers of a split-KV decode."""
    batch, heads, group, seq_q, seq_k, max_seq_q = sizes
    D = q.shape[-1]
    args = (q, k, v, sinks if sinks is not None else q, out, lse,
            cu_q if cu_q is not None else q, cu_k if cu_k is not None else q,
            seq_q, seq_k, max_seq_q, heads, group, *q_strides, *kv_strides, *lse_strides)
    meta = dict(HEAD_DIM=D, BLOCK_D=block_d(D), HAS_SINKS=sinks is not None,
                HAS_SOFTCAP=softcap > 0, IS_VARLEN=cu_q is not None,
                DOT_PRECISION=precision.dot_precision(q.dtype))
    if split is None:
        def grid(cfg):
            return triton.cdiv(max_seq_q, cfg["BLOCK_M"]), batch * heads, 1
        attention_fwd_tuned[grid](*args, 0, 0, 0, score_scale, cap_scale, left, right,
                                  SPLIT=False, PACK_GQA=False, **meta)
        return
    n_splits, split_len, block_m, block_n, warps, split_o, split_lse = split
    grid = (triton.cdiv(max_seq_q * group, block_m), batch * heads // group, n_splits)
    attention_fwd_kernel[grid](*args, split_o, split_lse, split_len, score_scale, cap_scale, left,
                               right, SPLIT=True, PACK_GQA=True, BLOCK_M=block_m, BLOCK_N=block_n,
                               num_warps=warps, num_stages=2 if not interpreting() else 1, **meta)


def aot_specs():
    """The forward in each GPU config at each head dim it serves (bf16, dense, no softcap)."""
    specs = []
    for bm, bn, warps, stages, dims, unproven in GPU_CONFIGS:
        specs += [dict(aot_spec(D, bm, bn, warps, stages), unproven=unproven) for D in dims]
    return specs


def aot_spec(D, bm, bn, warps, stages):
    """AOT spec of the forward at head dim D in one tile config (bf16, dense, sinks)."""
    sig = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Sinks": "*bf16", "Out": "*bf16",
           "Lse": "*fp32", "CuQ": "*i32", "CuK": "*i32"}
    sig.update({n: "i32" for n in ("seq_q", "seq_k", "max_seq_q", "n_heads", "group", "sq_b",
                                   "sq_h", "sq_s", "sk_b", "sk_h", "sk_s", "sl_b", "sl_h", "sl_s",
                                   "split_o", "split_lse", "split_len", "left", "right")})
    sig.update({"score_scale": "fp32", "cap_scale": "fp32"})
    const = dict(HEAD_DIM=D, BLOCK_D=D, BLOCK_M=bm, BLOCK_N=bn, HAS_SINKS=True,
                 HAS_SOFTCAP=False, IS_VARLEN=False, SPLIT=False, PACK_GQA=False,
                 DOT_PRECISION=precision.DEFAULT)
    sig.update({n: "constexpr" for n in const})
    return {"name": f"attention_fwd_d{D}_m{bm}_n{bn}_w{warps}_s{stages}",
            "fn": attention_fwd_kernel, "signature": sig, "constexprs": const,
            "hints": stride_hints(attention_fwd_kernel.arg_names),
            "num_warps": warps, "num_stages": stages}
