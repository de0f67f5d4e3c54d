"""The pure-PyTorch reference for every gptcore op: the CPU fallback and the test oracle.

Plain math with shape comments and no performance tricks, except two that keep it usable:
attention works one chunk of query rows at a time (and recomputes each chunk in backward),
so S=4096 fits in memory, and GQA groups query heads instead of expanding K/V.
Imports only torch.
"""
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Bytes of fp32 scores one attention chunk may hold: about 64 MB of (rows x Sk) per chunk.
_CHUNK_BYTES = 64 * 2**20


def _acc(t):
    """t in the accumulation dtype: fp32, or fp64 for fp64 inputs (gradcheck needs it)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


# ----------------------------------------------------------------------------- attention

def window_bounds(causal, window):
    """(left, right) key offsets visible around query position i' (-1 = unbounded).

    Key j is visible iff i' - left <= j <= i' + right, as flash-attn's window_size."""
    if window is None:
        left, right = -1, -1
    elif isinstance(window, int):
        left, right = window - 1, window - 1
    else:
        left, right = window
    if causal:
        right = 0 if right < 0 else min(right, 0)
    return left, right


def _visible(rows, Sq, Sk, left, right, device):
    """Boolean (len(rows), Sk): which keys query rows `rows` may see (bottom-right aligned)."""
    pos = rows.to(device)[:, None] + (Sk - Sq)       # (r, 1) query position i'
    keys = torch.arange(Sk, device=device)[None, :]  # (1, Sk)
    ok = torch.ones(len(rows), Sk, dtype=torch.bool, device=device)
    if left >= 0:
        ok &= keys >= pos - left
    if right >= 0:
        ok &= keys <= pos + right
    return ok


def _attention_chunk(q, k, v, sinks, rows, Sq, scale, left, right, softcap):
    """One chunk of query rows. q (B, Hkv, G, r, D) fp32; k, v (B, Hkv, 1, Sk, D) fp32."""
    B, Hkv, G, r, D = q.shape
    Sk = k.shape[-2]
    s = (q @ k.transpose(-1, -2)) * scale                    # (B, Hkv, G, r, Sk)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    s = s.masked_fill(~_visible(rows, Sq, Sk, left, right, q.device), float("-inf"))
    if Sk == 0:                                              # no keys: amax has nothing to reduce
        m = s.new_full((B, Hkv, G, r, 1), float("-inf"))
    else:
        m = s.amax(dim=-1, keepdim=True)                     # (B, Hkv, G, r, 1)
    if sinks is not None:
        sink = sinks.view(1, Hkv, G, 1, 1)
        m = torch.maximum(m, sink)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m).detach()  # shift only: no gradient
    e = torch.exp(s - m)                                     # masked keys give exactly 0
    l = e.sum(dim=-1, keepdim=True)                          # (B, Hkv, G, r, 1)
    if sinks is not None:
        l = l + torch.exp(sink - m)
    lse = (m + torch.log(l)).squeeze(-1)                     # -inf for rows that see nothing
    p = e / torch.where(l == 0, torch.ones_like(l), l)       # rows that see nothing: all zeros
    return p @ v, lse                                        # (B, Hkv, G, r, D), (B, Hkv, G, r)


def attention(q, k, v, *, causal=False, scale=None, window=None, sinks=None, softcap=None,
              return_lse=False):
    """Softmax attention, SDPA layout. q (B, Hq, Sq, D); k, v (B, Hkv, Sk, D). See docs/api.md."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    left, right = window_bounds(causal, window)
    qf = _acc(q).view(B, Hkv, G, Sq, D)          # query heads of one kv head side by side
    kf = _acc(k).unsqueeze(2)                    # (B, Hkv, 1, Sk, D): broadcast, never expanded
    vf = _acc(v).unsqueeze(2)
    sf = None if sinks is None else _acc(sinks)
    rows_per_chunk = max(1, _CHUNK_BYTES // (4 * max(B * Hq * Sk, 1)))   # any size may be 0
    outs, lses = [], []
    for start in range(0, max(Sq, 1), rows_per_chunk):     # Sq = 0: one empty chunk, on the graph
        rows = torch.arange(start, min(start + rows_per_chunk, Sq))
        args = (qf[:, :, :, start:start + len(rows)], kf, vf, sf, rows, Sq, scale, left, right,
                softcap)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, sinks)):
            o, lse = checkpoint(_attention_chunk, *args, use_reentrant=False)
        else:
            o, lse = _attention_chunk(*args)
        outs.append(o)
        lses.append(lse)
    out = torch.cat(outs, dim=3).reshape(B, Hq, Sq, v.shape[-1]).to(q.dtype)
    lse = torch.cat(lses, dim=3).reshape(B, Hq, Sq)
    return (out, lse) if return_lse else out


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                     causal=False, scale=None, window=None, sinks=None, softcap=None,
                     return_lse=False):
    """Packed sequences: q (Tq, Hq, D), k, v (Tk, Hkv, D); sequence n attends only to itself."""
    Tq, Hq, D = q.shape
    outs, lses = [], []
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for n in range(len(cq) - 1):
        qs = q[cq[n]:cq[n + 1]].transpose(0, 1).unsqueeze(0)   # (1, Hq, Lq, D)
        ks = k[ck[n]:ck[n + 1]].transpose(0, 1).unsqueeze(0)   # (1, Hkv, Lk, D)
        vs = v[ck[n]:ck[n + 1]].transpose(0, 1).unsqueeze(0)
        o, lse = attention(qs, ks, vs, causal=causal, scale=scale, window=window, sinks=sinks,
                           softcap=softcap, return_lse=True)
        outs.append(o[0].transpose(0, 1))                      # (Lq, Hq, D)
        lses.append(lse[0].transpose(0, 1))                    # (Lq, Hq)
    out = torch.cat(outs) if outs else q.new_zeros(0, Hq, v.shape[-1])
    lse = torch.cat(lses) if lses else q.new_zeros(0, Hq, dtype=torch.float32)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------- norms

def rms_norm(x, weight=None, eps=1e-6, residual=None):
    """x (..., d) [+ residual (..., d)] -> (y, h): h = x + residual (x without one),
    y = h / sqrt(mean(h**2) + eps) [* weight], accumulated in fp32, in x's dtype."""
    h = x if residual is None else x + residual
    hf = _acc(h)
    y = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)        # (..., d)
    if weight is not None:
        y = y * _acc(weight)
    return y.to(x.dtype), h


# ----------------------------------------------------------------------------- rotary

def rotate(x, interleaved=False):
    """The 90-degree turn of each pair of x (..., D): rotate-half pairs element i with i + D/2,
    (x1, x2) -> (-x2, x1) (Llama / Hugging Face); interleaved pairs 2i with 2i + 1 (GPT-J)."""
    if interleaved:
        return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary(q, k, cos, sin, interleaved=False):
    """Rotary position embedding of q (B, S, Hq, D) and k (B, S, Hk, D): x * cos + rotate(x) *
    sin with tables cos, sin (B or 1, S, D) shared by the heads, in fp32, in x's dtype."""
    c, s = _acc(cos)[:, :, None], _acc(sin)[:, :, None]                 # (B or 1, S, 1, D)

    def turn(x):
        xf = _acc(x)
        return (xf * c + rotate(xf, interleaved) * s).to(x.dtype)
    return turn(q), turn(k)


# ----------------------------------------------------------------------------- activations

def gelu(x, approximate="none"):
    """x * Phi(x) (approximate="none", Phi the normal CDF) or its tanh approximation
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in fp32, in x's dtype."""
    return F.gelu(_acc(x), approximate=approximate).to(x.dtype)


def gated_activation(gate_up, kind):
    """gate_up (..., 2I) -> act(gate) * up (..., I), gate = [..., :I], up = [..., I:] (one
    projection's output, Llama's gate_proj and up_proj stacked). kind "swiglu": act = silu;
    "geglu": act = gelu, tanh form."""
    I = gate_up.shape[-1] // 2
    gate, up = _acc(gate_up[..., :I]), _acc(gate_up[..., I:])
    act = F.silu(gate) if kind == "swiglu" else F.gelu(gate, approximate="tanh")
    return (act * up).to(gate_up.dtype)                                    # (..., I)


# ----------------------------------------------------------------------------- LM head + loss

def linear_cross_entropy(x, weight, target, ignore_index=-100, z_loss=0.0):
    """The LM head and its loss: x (N, d) @ weight (V, d)^T -> logits (N, V) in fp32, then
    mean over kept tokens (target != ignore_index) of lse - logits[target] + z_loss * lse**2,
    lse = logsumexp of a row. No kept token: 0 (not 0/0)."""
    logits = _acc(x) @ _acc(weight).t()                                     # (N, V)
    lse = torch.logsumexp(logits, dim=-1)                                   # (N,)
    kept = target != ignore_index                                           # (N,)
    picked = logits.gather(1, torch.where(kept, target, 0)[:, None])[:, 0]  # (N,)
    per_token = (lse - picked + z_loss * lse * lse) * kept
    return per_token.sum() / kept.sum().clamp(min=1)


# ----------------------------------------------------------------------------- routing

def _top_k(scores, top_k):
    """Top-k along the last dim, ties broken by the lower index (a stable descending sort)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[..., :top_k]


def route(logits, top_k, *, scoring="softmax", renormalize=True, bias=None):
    """logits (T, E) -> weights (T, k) fp32, indices (T, k) int64, best first."""
    logits = _acc(logits)
    if scoring == "softmax":
        probs = torch.softmax(logits, dim=-1)                 # (T, E)
        indices = _top_k(probs, top_k)
        weights = probs.gather(-1, indices)
        if renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
    elif scoring == "topk_softmax":
        indices = _top_k(logits, top_k)
        weights = torch.softmax(logits.gather(-1, indices), dim=-1)
    elif scoring == "sigmoid":
        scores = torch.sigmoid(logits)
        choice = scores if bias is None else scores + _acc(bias)
        indices = _top_k(choice, top_k)
        weights = scores.gather(-1, indices)
        if renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
    else:
        raise ValueError(f"scoring: expected 'softmax', 'topk_softmax' or 'sigmoid', got {scoring!r}")
    return weights, indices


# ----------------------------------------------------------------------------- experts

def glu_activation(h, activation, alpha=1.702, limit=7.0):
    """(n, 2I) gate/up pre-activations -> (n, I). Layouts of docs/api.md."""
    I = h.shape[-1] // 2
    if activation == "silu":
        return F.silu(h[:, :I]) * h[:, I:]
    if activation == "gelu":
        return F.gelu(h[:, :I], approximate="tanh") * h[:, I:]
    if activation == "gpt_oss":
        gate = h[:, 0::2].clamp(max=limit)                    # interleaved rows: even = gate
        up = h[:, 1::2].clamp(min=-limit, max=limit)
        return gate * torch.sigmoid(alpha * gate) * (up + 1)
    raise ValueError(f"activation: expected 'silu', 'gelu' or 'gpt_oss', got {activation!r}")


def moe_experts(x, indices, weights, gate_up_proj, down_proj, *, activation="silu",
                gate_up_bias=None, down_bias=None, alpha=1.702, limit=7.0):
    """y[t] = sum_j weights[t, j] * expert_{indices[t, j]}(x[t]); index -1 contributes nothing.

    x (T, H); indices, weights (T, k); gate_up_proj (E, 2I, H); down_proj (E, H, I)."""
    T, H = x.shape
    y = _acc(x.new_zeros(T, H))
    for e in range(gate_up_proj.shape[0]):
        tok, slot = torch.where(indices == e)                 # the (token, slot) pairs of expert e
        if tok.numel() == 0:
            continue
        h = _acc(x[tok]) @ _acc(gate_up_proj[e]).T            # (n, 2I)
        if gate_up_bias is not None:
            h = h + _acc(gate_up_bias[e])
        a = glu_activation(h, activation, alpha, limit)       # (n, I)
        out = a @ _acc(down_proj[e]).T                        # (n, H)
        if down_bias is not None:
            out = out + _acc(down_bias[e])
        y = y.index_add(0, tok, out * _acc(weights[tok, slot]).unsqueeze(-1))
    return y.to(x.dtype)


def moe_index(indices, num_experts, block_m=1):
    """The dispatch index of docs/moe-index-format.md: indices (T, k) -> (sorted_slots,
    expert_offsets, block_expert). Slot s = t*k + j; each expert's slots in increasing order,
    padded to a multiple of block_m with the sentinel T*k; block_expert is -1 past the end."""
    flat = indices.reshape(-1).long()                          # (T*k,)
    S = flat.numel()
    length = S + num_experts * (block_m - 1)
    counts = torch.bincount(flat[flat >= 0], minlength=num_experts)
    padded = (counts + block_m - 1) // block_m * block_m      # (E,)
    offsets = torch.cat([padded.new_zeros(1), padded.cumsum(0)])
    sorted_slots = torch.full((length,), S, dtype=torch.int64, device=indices.device)
    block_expert = torch.full((-(-length // block_m),), -1, dtype=torch.int64,
                              device=indices.device)
    for e in range(num_experts):
        slots = torch.nonzero(flat == e).flatten()            # increasing slot order
        start = int(offsets[e])
        sorted_slots[start:start + slots.numel()] = slots
        block_expert[start // block_m:int(offsets[e + 1]) // block_m] = e
    return sorted_slots, offsets, block_expert


def load_balancing_loss(logits, indices, num_experts):
    """Switch-style E * sum_e f_e * P_e, as Hugging Face computes it for top-k routing.

    f_e: fraction of tokens that chose expert e in any slot (sums to k); P_e: mean router
    probability of e. Equals k for perfectly balanced routing. Index -1 is not counted."""
    T = logits.shape[0]
    probs = torch.softmax(_acc(logits), dim=-1)             # (T, E)
    valid = indices[indices >= 0]
    f = torch.bincount(valid, minlength=num_experts).float() / max(T, 1)
    P = probs.sum(dim=0) / max(T, 1)                          # (E,); no tokens: 0, not NaN
    return num_experts * (f * P).sum()


def router_z_loss(logits):
    """ST-MoE z-loss: mean over tokens of logsumexp(logits)^2 (0 when there are no tokens)."""
    return torch.logsumexp(_acc(logits), dim=-1).square().sum() / max(logits.shape[0], 1)


def moe(x, router_weight, gate_up_proj, down_proj, top_k, *, router_bias=None,
        scoring="softmax", renormalize=True, bias=None, **expert_kwargs):
    """Router (Linear, weight (E, H)) -> route -> experts. Returns y (T, H) and the aux dict."""
    logits = F.linear(x, router_weight, router_bias)          # (T, E)
    weights, indices = route(logits, top_k, scoring=scoring, renormalize=renormalize, bias=bias)
    y = moe_experts(x, indices, weights, gate_up_proj, down_proj, **expert_kwargs)
    return y, moe_aux(logits, indices, router_weight.shape[0])


def moe_aux(logits, indices, num_experts):
    """The statistics a MoE layer reports beside its output."""
    return {
        "router_logits": logits,
        "load_balancing_loss": load_balancing_loss(logits, indices, num_experts),
        "z_loss": router_z_loss(logits),
        "tokens_per_expert": torch.bincount(indices[indices >= 0], minlength=num_experts),
    }


# ----------------------------------------------------------------------------- MXFP4

# The eight magnitudes of e2m1, indexed by the 3-bit code (sign is bit 3).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def mxfp4_quantize(w):
    """w (..., K), K % 32 == 0 -> (blocks uint8 (..., K/2), scales uint8 (..., K/32)).

    Per block of 32: scale 2^e with the smallest e that keeps max|w| / 2^e <= 6 (nothing
    clips), then round to nearest e2m1 value, ties to the even code (OCP MX spec)."""
    *lead, K = w.shape
    wb = w.float().reshape(*lead, K // 32, 32)
    amax = wb.abs().amax(dim=-1)                              # (..., K/32)
    mant, exp = torch.frexp(amax / 6.0)                       # amax/6 = mant * 2^exp, mant in [.5, 1)
    e = torch.where(mant == 0.5, exp - 1, exp)                # ceil(log2(amax / 6)), exact
    e = torch.where(amax == 0, torch.full_like(e, -127), e).clamp(-127, 127)
    q = (wb / torch.exp2(e.float()).unsqueeze(-1)).abs()      # |w| in units of the scale, <= 6
    # Midpoints between neighbouring codes; a tie rounds to the even code, so the midpoint
    # above an even code is exclusive (">") and the one above an odd code inclusive (">=").
    code = ((q > 0.25).int() + (q >= 0.75).int() + (q > 1.25).int() + (q >= 1.75).int()
            + (q > 2.5).int() + (q >= 3.5).int() + (q > 5.0).int())
    code = code + 8 * (wb < 0).int()
    code = code.reshape(*lead, K).to(torch.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)         # even element in the low nibble
    return blocks, (e + 127).to(torch.uint8)


def mxfp4_dequantize(blocks, scales, dtype=torch.bfloat16):
    """(blocks (..., K/2), scales (..., K/32)) -> w (..., K) in `dtype`."""
    *lead, half = blocks.shape
    codes = torch.stack([blocks & 0xF, blocks >> 4], dim=-1).reshape(*lead, 2 * half).long()
    lut = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), device=blocks.device)
    vals = lut[codes].reshape(*lead, half // 16, 32)          # (..., K/32, 32)
    scale = torch.exp2(scales.float() - 127).unsqueeze(-1)    # (..., K/32, 1)
    return (vals * scale).reshape(*lead, 2 * half).to(dtype)


# ----------------------------------------------------------------------------- quantised linear
# Weight-only quantisation of a linear layer's weight W (N, K): the stored forms are
#   bf16   data bf16 (N, K)
#   int8   data int8 (N, K), scales fp32 (N, ceil(K/G)): W[n, k] = data[n, k] * scales[n, k // G]
#   int4   data uint8 (N, ceil(K/2)), two codes a byte (even element in the low nibble), code =
#          q + 8 with q in [-7, 7]; scales fp32 (N, ceil(K/G)), G even: W = q * scales[n, k // G]
#   mxfp4  W padded with zeros to K32 = 32 * ceil(K/32) columns, then mxfp4_quantize:
#          data uint8 (N, K32/2), scales uint8 (N, K32/32)
# Symmetric: the scale maps a group's largest magnitude to the largest code (127 or 7), and a
# value rounds to the nearest code (ties to even, torch.round); an all-zero group has scale 0.

QUANT_LEVELS = {"int8": 127, "int4": 7}


def quantize_weight(w, fmt, group_size):
    """w (N, K) float -> (data, scales or None) in format `fmt` (layouts above). group_size G:
    the number of consecutive columns sharing one scale (int8, int4; 32 for mxfp4)."""
    N, K = w.shape
    wf = w.float()
    if fmt == "bf16":
        return w.to(torch.bfloat16), None
    if fmt == "mxfp4":
        padded = F.pad(wf, (0, -K % 32))                                 # (N, K32)
        return mxfp4_quantize(padded)
    G, top = group_size, QUANT_LEVELS[fmt]
    ngroups = -(-K // G)                                                 # ceil(K/G), N = 0 too
    groups = F.pad(wf, (0, -K % G)).reshape(N, ngroups, G)              # (N, K/G, G)
    scales = groups.abs().amax(dim=-1) / top                             # (N, ceil(K/G))
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(groups / safe.unsqueeze(-1)).clamp(-top, top)
    q = q.reshape(N, ngroups * G)[:, :K].to(torch.int8)                  # (N, K)
    if fmt == "int8":
        return q, scales
    codes = F.pad((q + 8).to(torch.uint8), (0, K % 2), value=8)         # (N, 2*ceil(K/2))
    return codes[:, 0::2] | (codes[:, 1::2] << 4), scales


def dequantize_weight(data, scales, fmt, group_size, K):
    """The stored form of quantize_weight -> W (N, K) fp32."""
    if fmt == "bf16":
        return data.float()
    if fmt == "mxfp4":
        return mxfp4_dequantize(data, scales, torch.float32)[:, :K]
    if fmt == "int8":
        q = data.float()                                                 # (N, K)
    else:
        codes = torch.stack([data & 0xF, data >> 4], dim=-1)             # (N, K/2, 2)
        q = codes.reshape(data.shape[0], -1)[:, :K].float() - 8          # (N, K)
    per_column = scales.repeat_interleave(group_size, dim=1)[:, :K]      # (N, K)
    return q * per_column


def quantized_linear(x, data, scales, fmt, group_size, bias=None):
    """x (..., K) @ dequant(W).T (+ bias) -> (..., N) in x's dtype, accumulated in fp32."""
    W = dequantize_weight(data, scales, fmt, group_size, x.shape[-1])   # (N, K)
    y = _acc(x) @ W.to(_acc(x).dtype).T
    if bias is not None:
        y = y + _acc(bias)
    return y.to(x.dtype)
