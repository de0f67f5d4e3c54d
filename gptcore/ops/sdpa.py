"""gptcore.scaled_dot_product_attention: torch.nn.functional.scaled_dot_product_attention's
signature and semantics on gptcore's kernels, so that switching is one line; and
gptcore.sdpa_override(), which routes torch's own function through it.

Every call gives what torch's function gives: its values (within rounding) or its exception.
What gptcore's kernels express runs on them (gptcore.ops.sdpa_native: no mask, causal in either
alignment, CausalBias, key-padding masks, any finite scale, GQA, ranks 3 and 4). Everything else
runs torch's function as it was before any override, with one log line per reason: other masks,
dropout_p > 0, float64, nested tensors and tensor subclasses, and arguments torch refuses (so
the error is torch's own).
"""
import logging
import math

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import CausalBias, CausalVariant
from torch.overrides import handle_torch_function

from gptcore.ops.sdpa_native import attend
from gptcore.ops.validate import FLOAT_DTYPES

logger = logging.getLogger("gptcore")

# torch's function as imported, before any override: the fallback, and what undo restores.
_TORCH_SDPA = F.scaled_dot_product_attention
# Tensor types gptcore's ops take as they are; any other subclass may mean something else.
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_logged = set()


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention, computed by gptcore where it can be.

    query (B, Hq, Sq, D) or (B, Sq, D); key, value (B, Hkv, Sk, D) or (B, Sk, D). attn_mask:
    None, bool (True = attend), float (added to the scores), broadcastable to (B, Hq, Sq, Sk),
    or a torch.nn.attention.bias.CausalBias. is_causal: key j visible to query i iff j <= i
    (top-left, as SDPA). enable_gqa: Hkv may divide Hq. dropout_p > 0 runs torch's function
    (gptcore's kernels have no attention dropout), so its random stream is torch's."""
    if isinstance(attn_mask, CausalBias):
        return _causal_bias(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    query, key, value, attn_mask = _autocast(query, key, value, attn_mask)
    args = (query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    reason = _torch_only(*args)
    if reason is None:
        out = attend(query, key, value, attn_mask, is_causal, False, scale)
        if out is not None:
            return out
        reason = "an attn_mask other than key padding (B, 1, 1, Sk)"
    return _fallback(reason, args)


def _causal_bias(query, key, value, bias, dropout_p, is_causal, scale, enable_gqa):
    """A CausalBias mask: upper-left is SDPA's is_causal, lower-right is gptcore's own causal
    alignment. torch's function recognises the subclass only when it is
    F.scaled_dot_product_attention, which under the override it is not: never hand it one."""
    if is_causal:
        raise ValueError("CausalBias should not be used with causal=True")   # torch's words
    if bias.variant == CausalVariant.UPPER_LEFT or bias.seq_len_q == bias.seq_len_kv:
        return scaled_dot_product_attention(query, key, value, None, dropout_p, True, scale,
                                            enable_gqa)
    query, key, value = _autocast(query, key, value)
    reason = _torch_only(query, key, value, None, dropout_p, False, scale, enable_gqa)
    if reason is None and (query.shape[-2], key.shape[-2]) != (bias.seq_len_q, bias.seq_len_kv):
        reason = "a CausalBias whose lengths are not the inputs'"
    if reason is None:
        return attend(query, key, value, None, True, True, scale)
    _log(reason)
    # CausalBias's own handling (its checks, then a materialised mask on CPU), which calls
    # F.scaled_dot_product_attention again: under the override that is this function.
    return handle_torch_function(F.scaled_dot_product_attention, (bias,), query, key, value,
                                 attn_mask=bias, dropout_p=dropout_p, is_causal=False,
                                 scale=scale, enable_gqa=enable_gqa)


def _autocast(*tensors):
    """What torch.autocast does to SDPA's arguments before a kernel sees them: inside autocast
    for the query's device, floating tensors other than float64 (the mask included) become the
    autocast dtype. gptcore's ops have no autocast rule, so it is done here."""
    device = tensors[0].device.type if type(tensors[0]) in _PLAIN else None
    if device is None or not torch.amp.is_autocast_available(device) \
            or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if type(t) in _PLAIN and t.is_floating_point()
                 and t.dtype != torch.float64 else t for t in tensors)


def _torch_only(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """Why torch's function must take these arguments (gptcore's kernels cannot express them,
    or torch refuses them and its error must be the one raised), or None."""
    tensors = (query, key, value)
    if not all(type(t) in _PLAIN and not t.is_nested for t in tensors):
        return "inputs other than plain dense tensors (nested tensors, tensor subclasses)"
    if attn_mask is not None and (type(attn_mask) not in _PLAIN or attn_mask.is_nested):
        return "an attn_mask other than a plain dense tensor"
    if type(dropout_p) not in (int, float) or dropout_p != 0:
        return "dropout_p other than 0 (gptcore's kernels have no attention dropout)"
    if type(is_causal) is not bool or type(enable_gqa) is not bool:
        return "an is_causal or enable_gqa that is not a bool"
    if scale is not None and (type(scale) not in (int, float) or not math.isfinite(scale)):
        return "a scale that is not a finite number"
    if attn_mask is not None and is_causal:
        return "attn_mask with is_causal (torch's backends combine them or refuse)"
    if query.dim() not in (3, 4) or key.dim() != query.dim() or value.dim() != query.dim():
        return "inputs of rank other than 3 or 4"
    if any(t.dtype not in FLOAT_DTYPES or t.dtype != query.dtype for t in tensors):
        return "dtypes other than one of float32, float16, bfloat16"
    if any(t.device != query.device for t in tensors):
        return "inputs on different devices"
    if key.shape != value.shape or key.shape[0] != query.shape[0] \
            or key.shape[-1] != query.shape[-1]:
        return "key/value/query shapes gptcore does not take (broadcast batch, value head dim)"
    if not 1 <= query.shape[-1] <= 256:
        return "head dims outside [1, 256]"
    if query.dim() == 4:
        Hq, Hkv = query.shape[1], key.shape[1]
        if Hkv == 0 or Hq % Hkv != 0 or (Hq != Hkv and not enable_gqa):
            return "head counts SDPA or gptcore refuse"
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool and attn_mask.dtype != query.dtype:
            return "an attn_mask dtype other than bool or the query's"
        if attn_mask.device != query.device:
            return "an attn_mask on another device"
        if attn_mask.requires_grad:
            return "an attn_mask that requires grad"
        if torch.compiler.is_compiling():
            return "an attn_mask under torch.compile (key padding is data-dependent)"
    return None


def _log(reason):
    """One warning per reason per process (none while torch.compile traces)."""
    if reason not in _logged and not torch.compiler.is_compiling():
        _logged.add(reason)
        logger.warning("gptcore.scaled_dot_product_attention: %s; using torch's SDPA", reason)


def _fallback(reason, args):
    _log(reason)
    query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa = args
    return _TORCH_SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                       is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


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
