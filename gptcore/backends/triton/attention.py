"""The Triton attention kernels as the `triton_` attention ops (specs in gptcore/ops/attention.py,
whose checks run before these): make inputs contiguous, call the launchers in kernels/attention.py
with the window (causal already folded in by gptcore.ops.attention)."""
import torch

from gptcore.backends.triton.kernels import attention as kernels
from gptcore.ops.spec import define


def _contiguous(*tensors):
    return [None if t is None else t.contiguous() for t in tensors]


def _empty_if_none(dsinks, q):
    return q.new_empty(0) if dsinks is None else dsinks


def attention_fwd(q, k, v, sinks, scale, window_left, window_right, softcap):
    q, k, v, sinks = _contiguous(q, k, v, sinks)
    return kernels.forward(q, k, v, sinks, scale, window_left, window_right, softcap)


def attention_bwd(dout, dlse, q, k, v, out, lse, sinks, scale, window_left, window_right,
                  softcap):
    dout, dlse, q, k, v, out, lse, sinks = _contiguous(dout, dlse, q, k, v, out, lse, sinks)
    dq, dk, dv, ds = kernels.backward(dout, dlse.float(), q, k, v, out, lse, sinks, scale,
                                      window_left, window_right, softcap)
    return dq, dk, dv, _empty_if_none(ds, q)


def attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks,
                         scale, window_left, window_right, softcap):
    q, k, v, sinks = _contiguous(q, k, v, sinks)
    cu_q, cu_k = _contiguous(cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32))
    return kernels.forward(q, k, v, sinks, scale, window_left, window_right, softcap, cu_q,
                           cu_k, max_seqlen_q, max_seqlen_k)


def attention_varlen_bwd(dout, dlse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                         max_seqlen_k, out, lse, sinks, scale, window_left, window_right,
                         softcap):
    dout, dlse, q, k, v, out, lse, sinks = _contiguous(dout, dlse, q, k, v, out, lse, sinks)
    cu_q, cu_k = _contiguous(cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32))
    dq, dk, dv, ds = kernels.backward(dout, dlse.float(), q, k, v, out, lse, sinks, scale,
                                      window_left, window_right, softcap, cu_q, cu_k,
                                      max_seqlen_q, max_seqlen_k)
    return dq, dk, dv, _empty_if_none(ds, q)


define("triton_", {
    "attention_fwd": attention_fwd,
    "attention_bwd": attention_bwd,
    "attention_varlen_fwd": attention_varlen_fwd,
    "attention_varlen_bwd": attention_varlen_bwd,
}, dispatch_keys=("CUDA", "CPU"))
