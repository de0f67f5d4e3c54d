"""gptcore.scaled_dot_product_attention: torch.nn.functional.scaled_dot_product_attention's
signature and semantics on gptcore's kernels, so that switching is one line; and
gptcore.sdpa_override(), which routes torch's own function through it.

What gptcore expresses without a mask tensor runs on its kernels: no mask, causal (SDPA aligns
the causal mask top-left when Sq != Sk, gptcore bottom-right: mapped through the keys and the
window), and a key-padding mask (B, 1, 1, Sk) (packed sequences through attention_varlen).
Every other mask, dtype or shape runs torch's SDPA, with one log line per reason.
"""
import logging

import torch
import torch.nn.functional as F

from gptcore.ops.attention import attention, attention_varlen
from gptcore.ops.validate import FLOAT_DTYPES

logger = logging.getLogger("gptcore")

# torch's function as imported, before any override: the fallback, and what undo restores.
_TORCH_SDPA = F.scaled_dot_product_attention
_logged = set()


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention, computed by gptcore.

    query (B, Hq, Sq, D) or (B, Sq, D); key, value (B, Hkv, Sk, D) or (B, Sk, D). attn_mask:
    None, bool (True = attend) or float (added to the scores), broadcastable to
    (B, Hq, Sq, Sk). is_causal: key j visible to query i iff j <= i (top-left, as SDPA).
    enable_gqa: Hkv may divide Hq. gptcore has no attention dropout: dropout_p > 0 raises."""
    if dropout_p > 0.0:
        raise ValueError(f"dropout_p: gptcore attention has no dropout, got {dropout_p}; pass "
                         "0.0 (for example dropout_p=self.dropout if self.training else 0.0)")
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask, is_causal: expected at most one of them, got both "
                         "(torch's SDPA refuses them together too)")
    args = (query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    reason = _unsupported(query, key, value, attn_mask, enable_gqa)
    if reason is not None:
        return _fallback(reason, args)
    rank3 = query.dim() == 3
    if rank3:                                          # (B, S, D) -> (B, 1, S, D)
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    if attn_mask is None:
        out = _unmasked(query, key, value, is_causal, scale)
    else:
        keep = _key_padding(attn_mask, query.shape[0], key.shape[2], rank3)
        if keep is None:
            return _fallback("an attn_mask other than key padding (B, 1, 1, Sk)", args)
        out = _padded(query, key, value, keep, scale)
    return out.squeeze(1) if rank3 else out


def _unsupported(query, key, value, attn_mask, enable_gqa):
    """Why gptcore's kernels cannot serve these inputs, or None."""
    tensors = (query, key, value)
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return "non-tensor inputs"
    if query.dim() not in (3, 4) or key.dim() != query.dim() or value.dim() != query.dim():
        return "inputs of rank other than 3 or 4"
    if any(t.dtype not in FLOAT_DTYPES or t.dtype != query.dtype for t in tensors):
        return "dtypes other than one of float32, float16, bfloat16"
    if any(t.device != query.device for t in tensors):
        return "inputs on different devices"
    if key.shape != value.shape or key.shape[0] != query.shape[0] \
            or key.shape[-1] != query.shape[-1]:
        return "key/value/query shapes gptcore does not take (broadcast batch, value head dim)"
    if query.dim() == 4:
        Hq, Hkv = query.shape[1], key.shape[1]
        if Hkv == 0 or Hq % Hkv != 0 or (Hq != Hkv and not enable_gqa):
            return "head counts SDPA or gptcore refuse"
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            return "a non-tensor attn_mask"
        if attn_mask.dtype != torch.bool and attn_mask.requires_grad:
            return "an attn_mask that requires grad"
        if torch.compiler.is_compiling():
            return "an attn_mask under torch.compile (key padding is data-dependent)"
    return None


def _fallback(reason, args):
    if reason not in _logged and not torch.compiler.is_compiling():
        _logged.add(reason)
        logger.warning("gptcore.scaled_dot_product_attention: %s; using torch's SDPA", reason)
    query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa = args
    return _TORCH_SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                       is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


def _unmasked(q, k, v, is_causal, scale):
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
    if rank3:                                          # broadcast against (B, Sq, Sk)
        mask = mask.unsqueeze(-3) if mask.dim() == 3 else mask
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
    lengths_k = keep.sum(1)                                             # (B,)
    cu_k = F.pad(lengths_k.cumsum(0), (1, 0)).to(torch.int32)           # (B + 1,)
    cu_q = torch.arange(0, (B + 1) * Sq, Sq, dtype=torch.int32, device=q.device)
    packed_q = q.transpose(1, 2).reshape(B * Sq, Hq, D)                 # (B * Sq, Hq, D)
    packed_k = k.transpose(1, 2)[keep]                                  # (Tk, Hkv, D)
    packed_v = v.transpose(1, 2)[keep]
    max_k = int(lengths_k.max()) if B > 0 else 0
    out = attention_varlen(packed_q, packed_k, packed_v, cu_q, cu_k, Sq, max_k, scale=scale)
    return out.view(B, Sq, Hq, D).transpose(1, 2)                       # (B, Hq, Sq, D)


class sdpa_override:
    """Routes torch.nn.functional.scaled_dot_product_attention through gptcore's, for code that
    calls it as F.scaled_dot_product_attention(...) at run time.

        with gptcore.sdpa_override():      # for a block
            model(x)
        handle = gptcore.sdpa_override()   # from here on
        handle.undo()                      # back to what was there before
    """

    def __init__(self):
        self._previous = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = scaled_dot_product_attention
        self._active = True

    def undo(self):
        """Restores the function that was in place when this override was made (idempotent)."""
        if self._active:
            F.scaled_dot_product_attention = self._previous
            self._active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.undo()
        return False
