"""Triton MoE routing: logits -> top-k (weights, indices), its backward, and the dispatch index
(a counting sort of token slots by expert, padded per expert to BLOCK_M rows, as vLLM's
moe_align_block_size and OpenAI triton_kernels' routing do), built with no host sync.

Dispatch index format: the one of docs/moe-index-format.md (branch cpu-moe; reference
gptcore.ref.moe_index). Slot s = t * top_k + j names token t's j-th choice.
  sorted_slots    int64 (T*k + E*(BLOCK_M-1),)  expert 0's slots, then expert 1's, ..., each in
                                      ascending slot order (a stable counting sort), each segment
                                      padded to a multiple of BLOCK_M with the sentinel T*k; every
                                      entry from offsets[E] on is the sentinel too
  expert_offsets  int64 (E+1,)        expert e owns sorted_slots[offsets[e]:offsets[e+1]]; every
                                      offset is a multiple of BLOCK_M; offsets[E] = padded total P
  block_expert    int64 (ceil(len / BLOCK_M),)  expert of rows [b*BLOCK_M, (b+1)*BLOCK_M), or -1
                                      from P / BLOCK_M on
  (histogram: counts int32 (E,), tokens per expert, from its own launcher)
The length is a bound known on the host (P <= T*k + E*(BLOCK_M-1)), so nothing waits on the GPU,
and every row of a block with an expert lies below P, so the GEMMs read no row past the end.
Ties in routing go to the lower expert index, as gptcore.ref.route (a stable descending sort).
An id outside [0, E) (-1 = "no expert") lands in no segment, so it is never gathered: on a GPU,
where validation does not read the indices, a bad id adds nothing instead of reading past the end.
"""
import torch
import triton
import triton.language as tl

_SOFTMAX, _TOPK_SOFTMAX, _SIGMOID = 0, 1, 2
SCORING = {"softmax": _SOFTMAX, "topk_softmax": _TOPK_SOFTMAX, "sigmoid": _SIGMOID}


@triton.jit
def _route_kernel(
    logits_ptr, bias_ptr,                 # (T, E) any float, (E,) fp32 or dummy
    weights_ptr, indices_ptr,             # out: (T, TOP_K) fp32, (T, TOP_K) int64
    T, E,
    SCORING_MODE: tl.constexpr, RENORMALIZE: tl.constexpr, HAS_BIAS: tl.constexpr,
    TOP_K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    ptrs = logits_ptr + rows.to(tl.int64)[:, None] * E + cols[None, :]
    logit = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=float("-inf"))
    # Rows past T read zeros (not -inf) so that no NaN is ever computed; they are not stored.
    logit = tl.where(row_ok[:, None] | ~col_ok[None, :], logit.to(tl.float32), 0.0)
    if SCORING_MODE == 0:
        shifted = logit - tl.max(logit, axis=1)[:, None]
        num = tl.where(col_ok[None, :], tl.exp(shifted), 0.0)
        value = num / tl.sum(num, axis=1)[:, None]                  # softmax probabilities
        choice = value
    elif SCORING_MODE == 1:
        value = logit
        choice = logit
    else:
        value = tl.sigmoid(logit)
        choice = value
        if HAS_BIAS:
            choice = value + tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    kcols = tl.arange(0, BLOCK_K)
    top_val = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    top_idx = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.int32)
    free = col_ok[None, :] & (cols[None, :] >= 0)                   # (BLOCK_T, BLOCK_E) not chosen
    for j in tl.static_range(TOP_K):
        live = tl.where(free, choice, float("-inf"))
        best = tl.max(live, axis=1)
        # Lowest free column holding the best score: ties go to the lower expert index.
        hit = free & (live == best[:, None])
        idx = tl.min(tl.where(hit, cols[None, :], BLOCK_E), axis=1)
        val = tl.sum(tl.where(cols[None, :] == idx[:, None], value, 0.0), axis=1)
        top_val = tl.where(kcols[None, :] == j, val[:, None], top_val)
        top_idx = tl.where(kcols[None, :] == j, idx[:, None], top_idx)
        free = free & (cols[None, :] != idx[:, None])
    k_ok = kcols[None, :] < TOP_K
    if SCORING_MODE == 1:
        shifted = tl.where(k_ok, top_val - tl.max(tl.where(k_ok, top_val, float("-inf")),
                                                  axis=1)[:, None], float("-inf"))
        num = tl.exp(shifted)
        top_val = num / tl.sum(num, axis=1)[:, None]
    elif RENORMALIZE:
        top_val = top_val / tl.sum(tl.where(k_ok, top_val, 0.0), axis=1)[:, None]
    out = rows.to(tl.int64)[:, None] * TOP_K + kcols[None, :]
    mask = row_ok[:, None] & k_ok
    tl.store(weights_ptr + out, top_val, mask=mask)
    tl.store(indices_ptr + out, top_idx.to(tl.int64), mask=mask)


@triton.jit
def _route_bwd_kernel(
    dweights_ptr, logits_ptr, indices_ptr,   # (T, TOP_K) fp32, (T, E), (T, TOP_K) int64
    dlogits_ptr,                             # out: (T, E) fp32
    T, E,
    SCORING_MODE: tl.constexpr, RENORMALIZE: tl.constexpr,
    TOP_K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    kcols = tl.arange(0, BLOCK_K)
    row_ok = rows < T
    col_ok = cols < E
    tile = row_ok[:, None] & col_ok[None, :]
    logit = tl.load(logits_ptr + rows.to(tl.int64)[:, None] * E + cols[None, :], mask=tile,
                    other=float("-inf")).to(tl.float32)            # (BLOCK_T, BLOCK_E)
    logit = tl.where(row_ok[:, None] | ~col_ok[None, :], logit, 0.0)  # no NaN in rows past T
    kmask = row_ok[:, None] & (kcols[None, :] < TOP_K)
    koffs = rows.to(tl.int64)[:, None] * TOP_K + kcols[None, :]
    dw = tl.load(dweights_ptr + koffs, mask=kmask, other=0.0)      # (BLOCK_T, BLOCK_K)
    idx = tl.load(indices_ptr + koffs, mask=kmask, other=-1).to(tl.int32)
    sel = idx[:, :, None] == cols[None, None, :]                   # (BLOCK_T, BLOCK_K, BLOCK_E)
    if SCORING_MODE == 1:
        top = tl.sum(tl.where(sel, logit[:, None, :], 0.0), axis=2)
        top = tl.where(kcols[None, :] < TOP_K, top, float("-inf"))
        num = tl.exp(top - tl.max(top, axis=1)[:, None])
        w = num / tl.sum(num, axis=1)[:, None]                     # (BLOCK_T, BLOCK_K)
        dtop = w * (dw - tl.sum(w * dw, axis=1)[:, None])
        dlogit = tl.sum(tl.where(sel, dtop[:, :, None], 0.0), axis=1)
    else:
        if SCORING_MODE == 0:
            num = tl.where(col_ok[None, :], tl.exp(logit - tl.max(logit, axis=1)[:, None]), 0.0)
            value = num / tl.sum(num, axis=1)[:, None]
        else:
            value = tl.sigmoid(logit)
        top = tl.sum(tl.where(sel, value[:, None, :], 0.0), axis=2)  # (BLOCK_T, BLOCK_K)
        if RENORMALIZE:
            total = tl.where(row_ok, tl.sum(top, axis=1), 1.0)[:, None]
            # w = top / total: d top_j = (dw_j - sum_m dw_m w_m) / total
            dtop = (dw - tl.sum(dw * top, axis=1)[:, None] / total) / total
        else:
            dtop = dw
        dvalue = tl.sum(tl.where(sel, dtop[:, :, None], 0.0), axis=1)  # (BLOCK_T, BLOCK_E)
        if SCORING_MODE == 0:
            dlogit = value * (dvalue - tl.sum(value * dvalue, axis=1)[:, None])
        else:
            dlogit = dvalue * value * (1.0 - value)
    tl.store(dlogits_ptr + rows.to(tl.int64)[:, None] * E + cols[None, :], dlogit, mask=tile)


@triton.jit
def _count_kernel(
    indices_ptr, counts_ptr,        # (num_slots,) int64 expert per slot; out: (E,) int32
    num_slots,
    BLOCK: tl.constexpr,
):
    """Program e counts the slots routed to expert e (no atomics: deterministic)."""
    e = tl.program_id(0)
    total = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, num_slots, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ids = tl.load(indices_ptr + offs, mask=offs < num_slots, other=-1)
        total += (ids == e).to(tl.int32)
    tl.store(counts_ptr + e, tl.sum(total, axis=0))


@triton.jit
def _scatter_kernel(
    indices_ptr, counts_ptr,                           # (num_slots,) int64, (E,) int32
    offsets_ptr, sorted_ptr, block_expert_ptr,         # out: (E+1,), (length,), (blocks,) int64
    num_slots, E,
    BLOCK_M: tl.constexpr, BLOCK: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Program e places its slots in ascending order at its padded segment: a stable counting
    sort, with each program scanning all slots (E passes over T*k int64: cheap next to the
    GEMMs, and no atomics)."""
    e = tl.program_id(0)
    experts = tl.arange(0, BLOCK_E)
    counts = tl.load(counts_ptr + experts, mask=experts < E, other=0).to(tl.int64)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    start = tl.sum(tl.where(experts < e, padded, 0), axis=0)
    my_padded = tl.sum(tl.where(experts == e, padded, 0), axis=0)
    tl.store(offsets_ptr + e, start)
    if e == E - 1:
        tl.store(offsets_ptr + E, start + my_padded)
    first_block = start // BLOCK_M
    for b in range(0, my_padded // BLOCK_M):
        tl.store(block_expert_ptr + first_block + b, e.to(tl.int64))
    pos = start
    for base in range(0, num_slots, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        ids = tl.load(indices_ptr + offs, mask=offs < num_slots, other=-1)
        hit = (ids == e).to(tl.int32)
        rank = tl.cumsum(hit, axis=0) - hit                         # exclusive prefix count
        tl.store(sorted_ptr + pos + rank, offs.to(tl.int64), mask=hit != 0)
        pos += tl.sum(hit, axis=0)


# ----------------------------------------------------------------------------- launchers

def _route_block_t(E):
    """Tokens per routing program: keep the (BLOCK_T, BLOCK_E) tile near 4K fp32 values."""
    return max(1, min(64, 4096 // triton.next_power_of_2(E)))


def route(logits, top_k, scoring, renormalize, bias):
    """logits (T, E) -> weights (T, k) fp32, indices (T, k) int64."""
    T, E = logits.shape
    logits = logits.contiguous()
    weights = torch.empty(T, top_k, device=logits.device, dtype=torch.float32)
    indices = torch.empty(T, top_k, device=logits.device, dtype=torch.int64)
    if T == 0:
        return weights, indices
    bias_arg = bias.float().contiguous() if bias is not None else logits
    block_t = _route_block_t(E)
    _route_kernel[(triton.cdiv(T, block_t),)](
        logits, bias_arg, weights, indices, T, E,
        SCORING_MODE=SCORING[scoring], RENORMALIZE=renormalize, HAS_BIAS=bias is not None,
        TOP_K=top_k, BLOCK_T=block_t, BLOCK_E=triton.next_power_of_2(E),
        BLOCK_K=triton.next_power_of_2(top_k))
    return weights, indices


def route_bwd(dweights, logits, indices, scoring, renormalize):
    """d weights (T, k) -> d logits (T, E) in logits' dtype."""
    T, E = logits.shape
    top_k = indices.shape[1]
    dlogits = torch.empty(T, E, device=logits.device, dtype=torch.float32)
    if T == 0:
        return dlogits.to(logits.dtype)
    block_t = max(1, _route_block_t(E) // triton.next_power_of_2(top_k))
    _route_bwd_kernel[(triton.cdiv(T, block_t),)](
        dweights.float().contiguous(), logits.contiguous(), indices.contiguous(), dlogits, T, E,
        SCORING_MODE=SCORING[scoring], RENORMALIZE=renormalize, TOP_K=top_k, BLOCK_T=block_t,
        BLOCK_E=triton.next_power_of_2(E), BLOCK_K=triton.next_power_of_2(top_k))
    return dlogits.to(logits.dtype)


def histogram(indices, num_experts):
    """indices (T, k) -> tokens per expert (E,) int32; ids outside [0, E) are not counted."""
    flat = indices.reshape(-1).contiguous()
    counts = torch.empty(num_experts, device=indices.device, dtype=torch.int32)
    _count_kernel[(num_experts,)](flat, counts, flat.numel(), BLOCK=1024)
    return counts


def index_length(num_slots, num_experts, block_m):
    """len(sorted_slots): the host-side bound T*k + E*(BLOCK_M-1) on the padded total P."""
    return num_slots + num_experts * (block_m - 1)


def build_index(indices, num_experts, block_m):
    """indices (T, k) int64 -> (sorted_slots, expert_offsets, block_expert) in the format of this
    file's header. Launches two kernels; never reads device memory on the host."""
    device = indices.device
    flat = indices.reshape(-1).contiguous()                        # (T*k,)
    num_slots = flat.numel()
    length = index_length(num_slots, num_experts, block_m)
    offsets = torch.empty(num_experts + 1, device=device, dtype=torch.int64)
    sorted_slots = torch.full((length,), num_slots, device=device, dtype=torch.int64)
    block_expert = torch.full((triton.cdiv(length, block_m),), -1, device=device,
                              dtype=torch.int64)
    counts = histogram(indices, num_experts)
    _scatter_kernel[(num_experts,)](flat, counts, offsets, sorted_slots, block_expert, num_slots,
                                    num_experts, BLOCK_M=block_m, BLOCK=1024,
                                    BLOCK_E=triton.next_power_of_2(num_experts))
    return sorted_slots, offsets, block_expert
