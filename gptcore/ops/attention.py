"""Attention: gptcore.attention and gptcore.attention_varlen, and the specs of their ops
(attention_fwd / _bwd, attention_varlen_fwd / _bwd: schema, check, fake, autograd, reference).

The ops take the mask as flash-attn's (window_left, window_right), causal already folded in:
their trailing arguments are always (scale, window_left, window_right, softcap), softcap 0 = none.
"""
import math

import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.backend import select
from gptcore.ops.spec import call, declare, differentiate
from gptcore.ops.validate import FLOAT_DTYPES

FLAGS = "float scale, int window_left, int window_right, float softcap"


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
    sinks (Hq,); softcap; `return_lse=True` also returns lse (B, Hq, Sq) fp32. See docs/api.md."""
    check_fwd(q, k, v, sinks)
    validate.attention_options(causal, scale, window, softcap)
    op = select("attention_fwd", q.device)
    out, lse = call(op, q, k, v, sinks, *_flags(causal, scale, window, softcap, q.shape[3]))
    return (out, lse) if return_lse else out


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                     causal=False, scale=None, window=None, sinks=None, softcap=None,
                     return_lse=False):
    """Packed sequences: q (Tq, Hq, D), k, v (Tk, Hkv, D), cu_seqlens int32 (N+1,) -> (Tq, Hq, D).

    Sequence n of q attends only to sequence n of k/v, with the masks of `attention`."""
    check_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks)
    validate.attention_options(causal, scale, window, softcap)
    op = select("attention_varlen_fwd", q.device)
    out, lse = call(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks,
                    *_flags(causal, scale, window, softcap, q.shape[2]))
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------- checks

def _qkv(q, k, v, rank, dtypes):
    """q, k, v of `rank` dims (4 dense, 3 packed), one dtype and device; k and v alike; GQA
    heads; head dim in [1, 256]."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        validate.tensor(name, t, ndim=rank, dtypes=dtypes)
    validate.same_dtype(("q", "k", "v"), (q, k, v))
    validate.same_device("k", k, q)
    validate.same_device("v", v, q)
    layout = "(B, Hkv, Sk, D)" if rank == 4 else "(Tk, Hkv, D)"
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected equal shapes {layout}, got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if rank == 4 and (k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]):
        B, _, _, D = q.shape
        raise ValueError(f"k: expected shape ({B}, Hkv, Sk, {D}) to match q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}")
    if rank == 3 and k.shape[2] != q.shape[2]:
        raise ValueError(f"k: expected head dim {q.shape[2]} like q, got {k.shape[2]}")
    validate.kv_heads("k", q.shape[1], k.shape[1])
    validate.head_dim("q", q.shape[-1])


def check_fwd(q, k, v, sinks, *flags, dtypes=FLOAT_DTYPES):
    _qkv(q, k, v, 4, dtypes)
    validate.optional_tensor("sinks", sinks, (q.shape[1],), q, dtypes)


def check_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks,
                     *flags, dtypes=FLOAT_DTYPES):
    _qkv(q, k, v, 3, dtypes)
    validate.packed_offsets(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, q, k)
    validate.optional_tensor("sinks", sinks, (q.shape[1],), q, dtypes)


def _check_grads(q, out, dout, lse, dlse, dtypes):
    """The backward ops' extra arguments: out, dout shaped like q; lse, dlse like q without D."""
    for name, t, want in (("out", out, q.shape), ("dout", dout, q.shape),
                          ("lse", lse, q.shape[:-1]), ("dlse", dlse, q.shape[:-1])):
        validate.tensor(name, t, dtypes=dtypes)
        if t.shape != want:
            raise ValueError(f"{name}: expected shape {tuple(want)}, got {tuple(t.shape)}")
    validate.same_dtype(("q", "out"), (q, out))


def check_bwd(dout, dlse, q, k, v, out, lse, sinks, *flags, dtypes=FLOAT_DTYPES):
    check_fwd(q, k, v, sinks, dtypes=dtypes)
    _check_grads(q, out, dout, lse, dlse, dtypes)


def check_varlen_bwd(dout, dlse, q, k, v, cu_q, cu_k, max_q, max_k, out, lse, sinks, *flags,
                     dtypes=FLOAT_DTYPES):
    check_varlen_fwd(q, k, v, cu_q, cu_k, max_q, max_k, sinks, dtypes=dtypes)
    _check_grads(q, out, dout, lse, dlse, dtypes)


# ----------------------------------------------------------------------------- reference

def _softcap(softcap):
    return softcap if softcap > 0 else None


def reference_fwd(q, k, v, sinks, scale, window_left, window_right, softcap):
    return ref.attention(q, k, v, scale=scale, window=(window_left, window_right), sinks=sinks,
                         softcap=_softcap(softcap), return_lse=True)


def reference_bwd(dout, dlse, q, k, v, out, lse, sinks, *flags):
    return differentiate(lambda q, k, v, s: reference_fwd(q, k, v, s, *flags),
                         (q, k, v, sinks), (dout, dlse))


def reference_varlen_fwd(q, k, v, cu_q, cu_k, max_q, max_k, sinks, scale, window_left,
                         window_right, softcap):
    return ref.attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale,
                                window=(window_left, window_right), sinks=sinks,
                                softcap=_softcap(softcap), return_lse=True)


def reference_varlen_bwd(dout, dlse, q, k, v, cu_q, cu_k, max_q, max_k, out, lse, sinks, *flags):
    offsets = (cu_q, cu_k, max_q, max_k)
    return differentiate(lambda q, k, v, s: reference_varlen_fwd(q, k, v, *offsets, s, *flags),
                         (q, k, v, sinks), (dout, dlse))


# ----------------------------------------------------------------------------- fakes, autograd

def _fwd_fake(q, k, v, *rest):
    *lead, _ = q.shape                                   # (B, Hq, Sq) or (Tq, Hq)
    return q.new_empty(*lead, v.shape[-1]), q.new_empty(*lead, dtype=torch.float32)


def _bwd_fake(dout, dlse, q, k, v, *rest):
    sinks = rest[-5]
    ds = sinks.new_empty(sinks.shape) if sinks is not None else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), ds


def _autograd(n_static):
    """Autograd for attention_fwd / attention_varlen_fwd: `n_static` inputs sit between v and
    sinks (the varlen offsets), and the trailing inputs are non-differentiable flags."""
    def make(bwd_name):
        def setup(ctx, inputs, output):
            q, k, v = inputs[:3]
            ctx.static = inputs[3:3 + n_static]
            sinks = inputs[3 + n_static]
            ctx.flags = inputs[4 + n_static:]
            ctx.has_sinks = sinks is not None
            ctx.save_for_backward(q, k, v, output[0], output[1], sinks)

        def backward(ctx, dout, dlse):
            q, k, v, out, lse, sinks = ctx.saved_tensors
            bwd = getattr(torch.ops.gptcore, bwd_name)
            dq, dk, dv, ds = bwd(dout, dlse, q, k, v, *ctx.static, out, lse, sinks, *ctx.flags)
            return (dq, dk, dv, *([None] * n_static), ds if ctx.has_sinks else None,
                    *([None] * len(ctx.flags)))
        return setup, backward
    return make


OFFSETS = "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k"
GRADS = "-> (Tensor, Tensor, Tensor, Tensor)"
declare(name="attention_fwd", schema=f"(Tensor q, Tensor k, Tensor v, Tensor? sinks, {FLAGS}) "
        "-> (Tensor, Tensor)", check=check_fwd, fake=_fwd_fake, reference=reference_fwd,
        backward="attention_bwd", autograd=_autograd(0))
declare(name="attention_bwd", schema="(Tensor dout, Tensor dlse, Tensor q, Tensor k, Tensor v, "
        f"Tensor out, Tensor lse, Tensor? sinks, {FLAGS}) {GRADS}", check=check_bwd,
        fake=_bwd_fake, reference=reference_bwd)
declare(name="attention_varlen_fwd", schema=f"(Tensor q, Tensor k, Tensor v, {OFFSETS}, "
        f"Tensor? sinks, {FLAGS}) -> (Tensor, Tensor)", check=check_varlen_fwd, fake=_fwd_fake,
        reference=reference_varlen_fwd, backward="attention_varlen_bwd", autograd=_autograd(4))
declare(name="attention_varlen_bwd", schema="(Tensor dout, Tensor dlse, Tensor q, Tensor k, "
        f"Tensor v, {OFFSETS}, Tensor out, Tensor lse, Tensor? sinks, {FLAGS}) {GRADS}",
        check=check_varlen_bwd, fake=_bwd_fake, reference=reference_varlen_bwd)
