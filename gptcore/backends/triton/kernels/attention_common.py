"""Pieces shared by the attention kernels: sequence bounds (dense or varlen), which blocks of the
other axis a block can see (so masks touch only boundary blocks, as FlashAttention-2), scores in
the log2 domain (exp2 with log2(e) folded into the scale), and the tile configs.
"""
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634     # kernels spell it out: a plain global is not a constexpr


def interpreting():
    """True when @triton.jit kernels run on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def block_d(head_dim):
    """Head dim padded to a power of two (tl.dot needs at least 16 along K)."""
    return max(16, triton.next_power_of_2(head_dim))


def score_scales(scale, softcap):
    """(score_scale, cap_scale) for `scores`: log2-domain scores without softcap are
    qk * score_scale; with softcap c they are cap_scale * tanh(qk * scale / c), and tanh is
    computed from exp2(qk * score_scale) with score_scale = 2 log2(e) scale / c."""
    if softcap > 0:
        return 2.0 * LOG2E * scale / softcap, softcap * LOG2E
    return scale * LOG2E, 0.0


def head_dim_bucket(block_dim):
    """Tile configs are proven (aot.py) per padded head dim: 64 (serving D <= 64), 128,
    256."""
    return max(64, block_dim)


def configs(table, interpreter_config):
    """triton.Configs of a table of (BLOCK_M, BLOCK_N, warps, stages, head-dim buckets,
    unproven specialisations); the interpreter gets one small config (multi-config autotune
    fails under it)."""
    rows = [interpreter_config] if interpreting() else table
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s, _, _ in rows]


def specialisations(named_args, kwargs):
    """The specialisations of a launch that a tile may not be proven for (aot.py
    compiles each config once per specialisation and the table lists where it spills):
    "fp32" operands (tf32 tiles hold twice the bytes of bf16 ones), "softcap", "varlen"."""
    found = set()
    q = named_args.get("Q")
    if q is not None and q.dtype == torch.float32:
        found.add("fp32")
    if named_args.get("HAS_SOFTCAP", kwargs.get("HAS_SOFTCAP")):
        found.add("softcap")
    if named_args.get("IS_VARLEN", kwargs.get("IS_VARLEN")):
        found.add("varlen")
    return found


def proven(table, bucket, specs):
    """(BLOCK_M, BLOCK_N, warps, stages) of the table rows proven for a head-dim bucket and a
    set of specialisations."""
    return [(m, n, w, s) for m, n, w, s, dims, unproven in table
            if bucket in dims and not specs & set(unproven)]


def pruner(table):
    """early_config_prune keyed on the head dim and the specialisations: keeps the configs
    proven for them."""
    def prune(cfgs, named_args, **kwargs):
        bucket = head_dim_bucket(named_args.get("BLOCK_D", kwargs.get("BLOCK_D")))
        keep = set(proven(table, bucket, specialisations(named_args, kwargs)))
        kept = [c for c in cfgs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
                                    c.num_stages) in keep]
        return kept or cfgs[-1:]
    return prune


@triton.jit
def seq_bounds(cu_ptr, b, seq_len, IS_VARLEN: tl.constexpr):
    """(first packed row, length) of sequence b: cu_seqlens for varlen, else (0, seq_len)."""
    start = b * 0
    length = seq_len + b * 0
    if IS_VARLEN:
        start = tl.load(cu_ptr + b)
        length = tl.load(cu_ptr + b + 1) - start
    return start, length


@triton.jit
def block_ranges(own_min, own_max, lower, upper, other_begin, other_end, BLOCK: tl.constexpr):
    """Blocks of the other axis seen by own indices own_min..own_max, where other index x is
    visible to own y iff y - lower <= x <= y + upper (-1 = unbounded) and
    other_begin <= x < other_end (other_begin a multiple of BLOCK).

    Returns (start, full_lo, full_hi, end): blocks in [start, full_lo) and [full_hi, end) need
    the mask, blocks in [full_lo, full_hi) are visible to every own index (no mask, no bounds
    check). Everything outside [start, end) is skipped."""
    lo = other_begin + own_min * 0
    hi = other_end + own_min * 0
    full_start = lo
    full_end = hi
    if lower >= 0:
        lo = tl.maximum(own_min - lower, lo)
        full_start = own_max - lower
    if upper >= 0:
        hi = tl.minimum(own_max + upper + 1, hi)
        full_end = own_min + upper + 1
    hi = tl.maximum(hi, other_begin)     # nothing visible: an empty range inside our slice
    lo = tl.minimum(lo, hi)
    full_start = tl.maximum(full_start, lo)
    full_end = tl.maximum(tl.minimum(full_end, hi), 0)
    start = lo // BLOCK * BLOCK
    full_lo = (full_start + BLOCK - 1) // BLOCK * BLOCK
    full_hi = full_end // BLOCK * BLOCK
    if full_lo >= full_hi:
        full_lo = (hi + BLOCK - 1) // BLOCK * BLOCK
        full_hi = full_lo
    return start, full_lo, full_hi, hi


@triton.jit
def visible(pos, cols, seq_k, left, right):
    """Mask of broadcastable (query position, key) pairs: key < seq_k and within the window."""
    ok = (cols < seq_k) & ((left < 0) | (cols >= pos - left))
    ok &= (right < 0) | (cols <= pos + right)
    return ok


@triton.jit
def scores(qk, score_scale, cap_scale, HAS_SOFTCAP: tl.constexpr):
    """Raw q.k -> scores in the log2 domain (natural score * log2(e)), softcapped if asked."""
    if HAS_SOFTCAP:
        # tanh(x) = 1 - 2 / (exp(2x) + 1): saturates to +-1 without overflow.
        t = 1.0 - 2.0 / (tl.math.exp2(qk * score_scale) + 1.0)
        return t * cap_scale
    else:
        return qk * score_scale


def stride_hints(arg_names):
    """AOT hints for contiguous dense tensors with head dims and lengths multiples of 16: every
    stride argument (s<tensor>_<b|h|s>, split_*) divisible by 16, the lse row stride equal to 1."""
    hints = {n: 16 for n in arg_names if n[:2] in ("sq", "sk", "sl") or n.startswith("split_")}
    if "sl_s" in hints:
        hints["sl_s"] = 1
    return hints
