"""gptcore.attention and gptcore.attention_varlen: validate, choose a backend, call its op."""
import math

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.backend import select


def _flags(causal, scale, window, softcap, head_dim):
    """The op's trailing arguments: scale, window_left, window_right, softcap. The one place
    where causal becomes part of the window (ref.window_bounds); no kernel sees `causal`."""
    left, right = ref.window_bounds(causal, tuple(window) if isinstance(window, list) else window)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    return scale, left, right, float(softcap or 0.0)


def attention(q, k, v, *, causal=False, scale=None, window=None, sinks=None, softcap=None,
              return_lse=False):
    """Softmax attention in SDPA's layout: q (B, Hq, Sq, D), k, v (B, Hkv, Sk, D) -> (B, Hq, Sq, D).

    GQA when Hq is a multiple of Hkv; bottom-right aligned causal and window masks; learned
    sinks (Hq,); softcap; `return_lse=True` also returns lse (B, Hq, Sq) fp32. See API.md."""
    validate.attention(q, k, v)
    validate.attention_options(q.shape[1], q.shape[3], causal, scale, window, sinks, softcap, q)
    op = select("attention_fwd", q.device)
    out, lse = op(q, k, v, sinks, *_flags(causal, scale, window, softcap, q.shape[3]))
    return (out, lse) if return_lse else out


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                     causal=False, scale=None, window=None, sinks=None, softcap=None,
                     return_lse=False):
    """Packed sequences: q (Tq, Hq, D), k, v (Tk, Hkv, D), cu_seqlens int32 (N+1,) -> (Tq, Hq, D).

    Sequence n of q attends only to sequence n of k/v, with the masks of `attention`."""
    validate.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    validate.attention_options(q.shape[1], q.shape[2], causal, scale, window, sinks, softcap, q)
    op = select("attention_varlen_fwd", q.device)
    out, lse = op(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks,
                  *_flags(causal, scale, window, softcap, q.shape[2]))
    return (out, lse) if return_lse else out
