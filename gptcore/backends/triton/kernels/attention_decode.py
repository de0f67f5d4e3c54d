"""Split-KV ("flash-decoding") attention for few query rows and many keys: the forward kernel
runs once per slice of the keys (SPLIT=True, fp32 partial out + lse per slice), then this
file's combine kernel merges the slices with their lse weights and adds the sink term.
"""
import torch
import triton
import triton.language as tl

from .attention_common import (block_d, interpreting, seq_bounds,
                                              stride_hints)
from .attention_fwd import aot_spec

# H100: 132 SMs. Enough programs to fill them twice; flash-attn caps splits at 128.
TARGET_PROGRAMS = 2 * 132
MAX_SPLITS = 128
# Decode tiles: 16 query rows (tl.dot's minimum), 64 keys per step, 4 warps; fp32 at D256
# spilled 144-208 bytes with 64 keys (aot.py), so it takes 32 (which in turn spills
# 16 bytes on sm90 for bf16/fp16, so only fp32 uses it).
GPU_DECODE = (16, 64, 4)
GPU_DECODE_FP32_D256 = (16, 32, 4)
INTERPRETER_DECODE = (16, 16, 4)
COMBINE_ROWS = 16


def decode_tiles(dtype=None, head_dim=0):
    """(BLOCK_M, BLOCK_N, warps) of the split-KV forward for q's dtype and head dim."""
    if interpreting():
        return INTERPRETER_DECODE
    return GPU_DECODE_FP32_D256 if dtype == torch.float32 and head_dim > 128 else GPU_DECODE


def n_splits(batch, heads, group, max_seq_q, max_seq_k, tiles=None):
    """Key slices per (row tile, kv head): 1 unless the dense grid leaves the GPU idle and each
    slice still holds at least 4 key blocks. Rows are (query, head of the group) pairs."""
    block_m, block_n, _ = tiles or decode_tiles()
    dense = triton.cdiv(max_seq_q, block_m) * batch * heads
    if dense >= TARGET_PROGRAMS:
        return 1
    packed = triton.cdiv(max_seq_q * group, block_m) * batch * (heads // group)
    by_keys = max_seq_k // (4 * block_n)
    return max(1, min(MAX_SPLITS, by_keys, triton.cdiv(TARGET_PROGRAMS, max(packed, 1))))


@triton.jit
def attention_combine_kernel(
    PartOut, PartLse, Sinks, Out, Lse, CuQ,         # pointers (partials fp32)
    seq_q, n_heads, n_split,                        # sizes
    sq_b, sq_h, sq_s, sl_b, sl_h, sl_s,             # strides of out and lse
    split_o, split_lse,                             # strides between slices of the partials
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    HAS_SINKS: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    q_start, len_q = seq_bounds(CuQ, b, seq_q, IS_VARLEN)
    if pid_m * BLOCK_M >= len_q:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                          # (M,)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < len_q
    tile_ok = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    o_off = (b.to(tl.int64) * sq_b + h.to(tl.int64) * sq_h + q_start.to(tl.int64) * sq_s
             + offs_m[:, None] * sq_s + offs_d[None, :])                      # (M, D)
    l_off = b.to(tl.int64) * sl_b + h.to(tl.int64) * sl_h + (q_start + offs_m).to(tl.int64) * sl_s

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)     # natural-log running max
    l_i = tl.zeros([BLOCK_M], tl.float32)
    if HAS_SINKS:
        m_i = tl.zeros([BLOCK_M], tl.float32) + tl.load(Sinks + h).to(tl.float32)
        l_i += 1.0
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for s in range(0, n_split):
        lse_s = tl.load(PartLse + s * split_lse + l_off, mask=row_ok, other=float("-inf"))
        o_s = tl.load(PartOut + s * split_o + o_off, mask=tile_ok, other=0.0)
        m_new = tl.maximum(m_i, lse_s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        w = tl.exp(lse_s - m_safe)                            # slice's share; 0 if it saw nothing
        l_i = l_i * alpha + w
        acc = acc * alpha[:, None] + o_s * w[:, None]
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)                  # no slice saw a key: m_i = -inf
    lse = m_i + tl.log(l_safe)
    out = acc / l_safe[:, None]
    tl.store(Out + o_off, out.to(Out.dtype.element_ty), mask=tile_ok)
    tl.store(Lse + l_off, lse, mask=row_ok)


def launch_combine(part_out, part_lse, sinks, out, lse, cu_q, sizes, q_strides, lse_strides):
    """Merges `part_out` (n_split, *out.shape) fp32 and `part_lse` (n_split, *lse.shape) into
    out and lse. sizes = (batch, heads, seq_q, max_seq_q)."""
    batch, heads, seq_q, max_seq_q = sizes
    D = out.shape[-1]
    grid = (triton.cdiv(max_seq_q, COMBINE_ROWS), batch * heads)
    attention_combine_kernel[grid](
        part_out, part_lse, sinks if sinks is not None else out, out, lse,
        cu_q if cu_q is not None else lse, seq_q, heads, part_out.shape[0], *q_strides,
        *lse_strides, part_out[0].numel(), part_lse[0].numel(),
        HEAD_DIM=D, BLOCK_D=block_d(D), BLOCK_M=COMBINE_ROWS, HAS_SINKS=sinks is not None,
        IS_VARLEN=cu_q is not None, num_warps=4)


def partials(out, lse, splits):
    """Empty fp32 partial buffers for `splits` key slices."""
    return (torch.empty((splits, *out.shape), device=out.device, dtype=torch.float32),
            torch.empty((splits, *lse.shape), device=lse.device, dtype=torch.float32))


def aot_specs():
    """The combine kernel at D = 64, 128, 256 (bf16 out)."""
    specs = []
    for D in (64, 128, 256):
        sig = {"PartOut": "*fp32", "PartLse": "*fp32", "Sinks": "*bf16", "Out": "*bf16",
               "Lse": "*fp32", "CuQ": "*i32"}
        sig.update({n: "i32" for n in ("seq_q", "n_heads", "n_split", "sq_b", "sq_h", "sq_s",
                                       "sl_b", "sl_h", "sl_s", "split_o", "split_lse")})
        const = dict(HEAD_DIM=D, BLOCK_D=D, BLOCK_M=COMBINE_ROWS, HAS_SINKS=True,
                     IS_VARLEN=False)
        sig.update({n: "constexpr" for n in const})
        specs.append({"name": f"attention_combine_d{D}", "fn": attention_combine_kernel,
                      "signature": sig, "constexprs": const, "num_warps": 4, "num_stages": 1,
                      "hints": stride_hints(attention_combine_kernel.arg_names)})
    specs += [_decode_spec(D, GPU_DECODE, ("fp32",) if D == 256 else ()) for D in (64, 128, 256)]
    specs.append(_decode_spec(256, GPU_DECODE_FP32_D256, (), operands="*fp32"))
    return specs


def _decode_spec(D, tiles, unproven, operands="*bf16"):
    """The forward kernel as the decode launches it (split keys, packed GQA rows, fp32
    partials), with q/k/v/sinks of type `operands`."""
    block_m, block_n, warps = tiles
    spec = aot_spec(D, block_m, block_n, warps, 2)
    spec["signature"] = {n: operands if t == "*bf16" else t for n, t in spec["signature"].items()}
    spec["signature"].update(Out="*fp32")
    spec["constexprs"].update(SPLIT=True, PACK_GQA=True)
    spec["name"] = f"attention_decode_d{D}_m{block_m}_n{block_n}_w{warps}_s2"
    return dict(spec, unproven=unproven)
