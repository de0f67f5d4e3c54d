"""The SDPA calls gptcore's attention kernels serve: no mask, causal aligned top-left (SDPA's
is_causal, CausalBias upper-left) or bottom-right (CausalBias lower-right), and key-padding masks
(B, 1, 1, Sk), packed through attention_varlen. Callers have already checked dtypes, ranks,
shapes and devices (gptcore.ops.sdpa); `attend` returns None for a mask it cannot express."""
import torch

from gptcore.ops import packing
from gptcore.ops.attention import attention, attention_varlen


def attend(q, k, v, attn_mask, is_causal, bottom_right, scale):
    """q (B, Hq, Sq, D) or (B, Sq, D); k, v (B, Hkv, Sk, D) or (B, Sk, D) -> q's shape, or None
    when attn_mask is not a key-padding mask."""
    rank3 = q.dim() == 3
    keep = None
    if attn_mask is not None:
        keep = _key_padding(attn_mask, q.shape[0], k.shape[-2], rank3)
        if keep is None:
            return None
    if rank3:                                          # (B, S, D) -> (B, 1, S, D)
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
    q, scale = _positive_scale(q, scale)
    if keep is not None:
        out = _padded(q, k, v, keep, scale)
    elif is_causal and bottom_right:
        out = attention(q, k, v, causal=True, scale=scale)
    else:
        out = _top_left(q, k, v, is_causal, scale)
    return out.squeeze(1) if rank3 else out


def _positive_scale(q, scale):
    """gptcore's kernels take scale > 0; SDPA allows any finite scale. s * (q . k) equals
    |s| * ((-q) . k) for s < 0, and scale 0 gives every visible key the same score 0, as q = 0
    does; autograd carries both through to dq (zero for scale 0, as in SDPA)."""
    if scale is None or scale > 0:
        return q, scale
    if scale < 0:
        return -q, -scale
    return q * 0.0, 1.0


def _top_left(q, k, v, is_causal, scale):
    """q (B, Hq, Sq, D), k, v (B, Hkv, Sk, D) with no mask or SDPA's top-left causal mask."""
    Sq, Sk = q.shape[2], k.shape[2]
    if not is_causal or Sq == Sk:
        return attention(q, k, v, causal=is_causal, scale=scale)
    if Sq < Sk:
        # Top-left: query i sees keys j <= i < Sq, so keys from Sq on are never seen, and on
        # the first Sq keys top-left and bottom-right alignment agree.
        return attention(q, k[:, :, :Sq], v[:, :, :Sq], causal=True, scale=scale)
    # Sq > Sk: query i sees keys j <= i; at gptcore's bottom-right position i' = i - (Sq - Sk)
    # that is j <= i' + (Sq - Sk): a right window of Sq - Sk, unbounded on the left.
    return attention(q, k, v, causal=False, scale=scale, window=(-1, Sq - Sk))


def _key_padding(mask, B, Sk, rank3):
    """The (B, Sk) bool keep-mask if `mask` only hides keys per batch row (bool, or float with
    values 0 and -inf only), else None."""
    if rank3:
        if mask.dim() > 3:         # broadcasting would make the output 4-D: torch's to compute
            return None
        mask = mask.unsqueeze(-3) if mask.dim() == 3 else mask     # against (B, 1, Sq, Sk)
    if mask.dim() > 4:
        return None
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    if mask.shape[1] != 1 or mask.shape[2] != 1 or mask.shape[0] not in (1, B) \
            or mask.shape[3] not in (1, Sk):
        return None
    rows = mask[:, 0, 0, :]                            # (1 or B, 1 or Sk)
    if rows.dtype != torch.bool:
        keep = rows == 0
        if not bool(torch.all(keep | (rows == float("-inf")))):
            return None
        rows = keep
    return rows.expand(B, Sk)


def _padded(q, k, v, keep, scale):
    """Non-causal attention over the kept keys of each batch row, as packed sequences.
    q (B, Hq, Sq, D), k, v (B, Hkv, Sk, D), keep (B, Sk) bool."""
    B, Hq, Sq, D = q.shape
    cu_k, max_k = packing.unpad(keep)                                   # (B + 1,)
    cu_q = torch.arange(B + 1, dtype=torch.int32, device=q.device) * Sq   # (B + 1,); Sq may be 0
    packed_q = q.transpose(1, 2).reshape(B * Sq, Hq, D)                 # (B * Sq, Hq, D)
    packed_k = k.transpose(1, 2)[keep]                                  # (Tk, Hkv, D)
    packed_v = v.transpose(1, 2)[keep]
    out = attention_varlen(packed_q, packed_k, packed_v, cu_q, cu_k, Sq, max_k, scale=scale)
    return out.view(B, Sq, Hq, D).transpose(1, 2)                       # (B, Hq, Sq, D)
