"""Deliberately dumb oracles for gptcore.ref, written from the words of API.md (not from ref.py):
one query row, one token, one slot or one element at a time, in float64, with explicit sums.

Every function is built from differentiable torch ops, so tests may also take its gradients."""
import math

import torch

E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)   # e2m1 magnitude of codes 0..7


# ----------------------------------------------------------------------------- attention

def visible(i, j, Sq, Sk, causal, window):
    """API.md: query i sits at key position i' = i + Sk - Sq; is key j visible to it?"""
    pos = i + Sk - Sq
    if causal and j > pos:
        return False
    if window is None:
        return True
    if isinstance(window, int):
        return abs(pos - j) < window
    left, right = window
    if left != -1 and j < pos - left:
        return False
    if right != -1 and j > pos + right:
        return False
    return True


def attention(q, k, v, causal=False, scale=None, window=None, sinks=None, softcap=None):
    """q (B, Hq, Sq, D), k, v (B, Hkv, Sk, D) -> out (B, Hq, Sq, D), lse (B, Hq, Sq), float64."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q, k, v = q.double(), k.double(), v.double()
    out_rows, lse_rows = [], []
    for b in range(B):
        for h in range(Hq):
            kv_head = h // (Hq // Hkv)
            for i in range(Sq):
                logits, values = [], []
                for j in range(Sk):
                    if not visible(i, j, Sq, Sk, causal, window):
                        continue
                    s = torch.dot(q[b, h, i], k[b, kv_head, j]) * scale
                    if softcap is not None:
                        s = softcap * torch.tanh(s / softcap)
                    logits.append(s)
                    values.append(v[b, kv_head, j])
                terms = logits + ([sinks[h].double()] if sinks is not None else [])
                if terms:
                    lse = torch.logsumexp(torch.stack(terms), dim=0)   # log of the denominator
                else:
                    lse = q.new_tensor(float("-inf"))
                row = q.new_zeros(v.shape[-1])                          # no visible key: zeros
                for s, val in zip(logits, values):
                    row = row + torch.exp(s - lse) * val
                out_rows.append(row)
                lse_rows.append(lse)
    out = torch.stack(out_rows).reshape(B, Hq, Sq, v.shape[-1]) if out_rows else \
        q.new_zeros(B, Hq, Sq, v.shape[-1])
    lse = torch.stack(lse_rows).reshape(B, Hq, Sq) if lse_rows else q.new_zeros(B, Hq, Sq)
    return out, lse


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **options):
    """Packed q (Tq, Hq, D), k, v (Tk, Hkv, D): each sequence through `attention` alone."""
    outs, lses = [], []
    for n in range(len(cu_seqlens_q) - 1):
        q0, q1 = int(cu_seqlens_q[n]), int(cu_seqlens_q[n + 1])
        k0, k1 = int(cu_seqlens_k[n]), int(cu_seqlens_k[n + 1])
        o, lse = attention(q[q0:q1].transpose(0, 1)[None], k[k0:k1].transpose(0, 1)[None],
                           v[k0:k1].transpose(0, 1)[None], **options)
        outs.append(o[0].transpose(0, 1))                   # (Lq, Hq, D)
        lses.append(lse[0].transpose(0, 1))                 # (Lq, Hq)
    return torch.cat(outs), torch.cat(lses)


# ----------------------------------------------------------------------------- routing

def route(logits, top_k, scoring="softmax", renormalize=True, bias=None):
    """Per token: score every expert, sort by score descending then index ascending."""
    T, E = logits.shape
    all_weights, all_indices = [], []
    for t in range(T):
        row = logits[t].double()
        if scoring == "softmax":
            exps = [torch.exp(row[e] - row.max()) for e in range(E)]
            probs = [p / sum(exps) for p in exps]
            select = [float(p.detach()) for p in probs]
        elif scoring == "topk_softmax":
            select = row.detach().tolist()
        else:
            sig = [1 / (1 + torch.exp(-row[e])) for e in range(E)]
            shift = [0.0] * E if bias is None else bias.tolist()   # bias: selection only
            select = [float(sig[e].detach()) + shift[e] for e in range(E)]
        chosen = sorted(range(E), key=lambda e: (-select[e], e))[:top_k]
        if scoring == "softmax":
            w = [probs[e] for e in chosen]
        elif scoring == "topk_softmax":
            exps = [torch.exp(row[e] - row[chosen[0]]) for e in chosen]
            w = [x / sum(exps) for x in exps]
        else:
            w = [sig[e] for e in chosen]
        if renormalize and scoring != "topk_softmax":
            w = [x / sum(w) for x in w]
        all_weights.append(torch.stack(w))
        all_indices.append(chosen)
    return torch.stack(all_weights), torch.tensor(all_indices, dtype=torch.int64)


# ----------------------------------------------------------------------------- experts

def glu(h, activation, alpha, limit):
    """(2I,) pre-activation of one token for one expert -> (I,), from API.md's formulas."""
    I = h.shape[0] // 2
    if activation == "silu":
        gate, up = h[:I], h[I:]
        return gate / (1 + torch.exp(-gate)) * up
    if activation == "gelu":
        gate, up = h[:I], h[I:]
        inner = math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)
        return 0.5 * gate * (1 + torch.tanh(inner)) * up
    gate = torch.stack([h[2 * r] for r in range(I)])           # even rows
    up = torch.stack([h[2 * r + 1] for r in range(I)])         # odd rows
    gate = torch.where(gate > limit, gate.new_tensor(limit), gate)
    up = torch.where(up > limit, up.new_tensor(limit), up)
    up = torch.where(up < -limit, up.new_tensor(-limit), up)
    return gate / (1 + torch.exp(-alpha * gate)) * (up + 1)


def moe_experts(x, indices, weights, gate_up_proj, down_proj, activation="silu",
                gate_up_bias=None, down_bias=None, alpha=1.702, limit=7.0):
    """y[t] = sum_j weights[t, j] * expert_{indices[t, j]}(x[t]), one (token, slot) at a time."""
    T, H = x.shape
    rows = []
    for t in range(T):
        y = x.new_zeros(H, dtype=torch.float64)
        for j in range(indices.shape[1]):
            e = int(indices[t, j])
            if e == -1:
                continue
            h = torch.mv(gate_up_proj[e].double(), x[t].double())          # (2I,)
            if gate_up_bias is not None:
                h = h + gate_up_bias[e].double()
            out = torch.mv(down_proj[e].double(), glu(h, activation, alpha, limit))  # (H,)
            if down_bias is not None:
                out = out + down_bias[e].double()
            y = y + weights[t, j].double() * out
        rows.append(y)
    return torch.stack(rows)


def load_balancing_loss(logits, indices, num_experts):
    """E * sum_e f_e * P_e; f_e = (slots choosing e) / T (Hugging Face: sums to k), P_e = mean p."""
    T = logits.shape[0]
    total = 0.0
    for e in range(num_experts):
        count = sum(int(i) == e for i in indices.flatten())
        mean_p = sum(torch.softmax(logits[t].double(), dim=0)[e] for t in range(T)) / T
        total = total + count / T * mean_p
    return num_experts * total


def router_z_loss(logits):
    """mean over tokens of logsumexp(logits[t])**2."""
    terms = [torch.log(torch.exp(row.double()).sum()) ** 2 for row in logits]
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- MXFP4

def mxfp4_quantize(w):
    """w (R, K) -> blocks (R, K/2), scales (R, K/32) uint8, element by element (OCP MX v1.0 with
    API.md's scale: the smallest 2^e, e in [-127, 127], with max|w| / 2^e <= 6)."""
    R, K = w.shape
    values = w.double().tolist()
    blocks = torch.zeros(R, K // 2, dtype=torch.uint8)
    scales = torch.zeros(R, K // 32, dtype=torch.uint8)
    for r in range(R):
        for b in range(K // 32):
            block = values[r][32 * b:32 * b + 32]
            amax = max(abs(x) for x in block)
            e = -127
            while e < 127 and amax > 6 * 2.0 ** e:
                e += 1
            scales[r, b] = e + 127
            for n, x in enumerate(block):
                m = abs(x) / 2.0 ** e
                # nearest grid value; on a tie the even code (its mantissa bit is 0)
                code = min(range(8), key=lambda c: (abs(m - E2M1_GRID[c]), c % 2))
                code += 8 if x < 0 else 0
                col = (32 * b + n) // 2
                blocks[r, col] |= code if n % 2 == 0 else code << 4   # even element: low nibble
    return blocks, scales
