"""The pure-PyTorch reference as the `ref_` backend ops (see _registry.py).

Forward ops call gptcore.ref; backward ops recompute the forward under autograd and
differentiate it, so the reference's gradients are torch's own."""
import torch

from gptcore import ref
from gptcore.ops import _registry


def _softcap(softcap):
    return softcap if softcap > 0 else None


def _autograd_on():
    """Autograd inside a kernel: grad mode on, and the autograd dispatch keys back in play.

    A kernel reached through a TorchDispatchMode (opcheck, FlopCounterMode, fake tensors) runs
    with the autograd keys excluded, and recomputing the forward there records no graph."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def _grads(outputs, inputs, grad_outputs):
    """Gradients of `outputs` for each input: zeros where unused, an empty tensor for None.

    Outputs that depend on no input (empty ones, say Sq = 0) add nothing."""
    if isinstance(outputs, torch.Tensor):
        outputs, grad_outputs = (outputs,), (grad_outputs,)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    live = [t for t in inputs if t is not None]
    found = torch.autograd.grad([o for o, _ in pairs], live, [g for _, g in pairs],
                                allow_unused=True) if pairs else [None] * len(live)
    grads = iter(found)
    result = []
    for t in inputs:
        if t is None:
            result.append(live[0].new_empty(0))
            continue
        g = next(grads)
        result.append(t.new_zeros(t.shape) if g is None else g)
    return result


def _leaves(*tensors):
    return [None if t is None else t.detach().requires_grad_(t.is_floating_point())
            for t in tensors]


def attention_fwd(q, k, v, sinks, causal, scale, window_left, window_right, softcap):
    return ref.attention(q, k, v, causal=causal, scale=scale,
                         window=(window_left, window_right), sinks=sinks,
                         softcap=_softcap(softcap), return_lse=True)


def attention_bwd(dout, dlse, q, k, v, out, lse, sinks, causal, scale, window_left,
                  window_right, softcap):
    with torch.enable_grad(), _autograd_on():
        q, k, v, sinks = _leaves(q, k, v, sinks)
        o, l = attention_fwd(q, k, v, sinks, causal, scale, window_left, window_right, softcap)
        dq, dk, dv, ds = _grads((o, l), (q, k, v, sinks), (dout, dlse))
    return dq, dk, dv, ds


def attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks,
                         causal, scale, window_left, window_right, softcap):
    return ref.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                causal=causal, scale=scale,
                                window=(window_left, window_right), sinks=sinks,
                                softcap=_softcap(softcap), return_lse=True)


def attention_varlen_bwd(dout, dlse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                         max_seqlen_k, out, lse, sinks, causal, scale, window_left, window_right,
                         softcap):
    with torch.enable_grad(), _autograd_on():
        q, k, v, sinks = _leaves(q, k, v, sinks)
        o, l = attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                    max_seqlen_k, sinks, causal, scale, window_left, window_right,
                                    softcap)
        dq, dk, dv, ds = _grads((o, l), (q, k, v, sinks), (dout, dlse))
    return dq, dk, dv, ds


def route(logits, top_k, scoring, renormalize, bias):
    return ref.route(logits, top_k, scoring=scoring, renormalize=renormalize, bias=bias)


def route_bwd(dweights, logits, indices, scoring, renormalize, bias):
    with torch.enable_grad(), _autograd_on():
        (leaf,) = _leaves(logits)
        weights, _ = ref.route(leaf, indices.shape[1], scoring=scoring, renormalize=renormalize,
                               bias=bias)
        (dlogits,) = _grads(weights, (leaf,), dweights)
    return dlogits


def moe_experts_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                    activation, alpha, limit):
    return ref.moe_experts(x, indices, weights, gate_up_proj, down_proj, activation=activation,
                           gate_up_bias=gate_up_bias, down_bias=down_bias, alpha=alpha,
                           limit=limit)


def moe_experts_bwd(dy, x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                    activation, alpha, limit):
    with torch.enable_grad(), _autograd_on():
        leaves = _leaves(x, weights, gate_up_proj, down_proj, gate_up_bias, down_bias)
        xl, wl, gul, dl, gubl, dbl = leaves
        y = moe_experts_fwd(xl, indices, wl, gul, dl, gubl, dbl, activation, alpha, limit)
        grads = _grads(y, leaves, dy)
    return tuple(grads)


def moe_experts_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks,
                      down_scales, gate_up_bias, down_bias, activation, alpha, limit):
    gate_up = ref.mxfp4_dequantize(gate_up_blocks, gate_up_scales, torch.float32)
    down = ref.mxfp4_dequantize(down_blocks, down_scales, torch.float32)
    return moe_experts_fwd(x, indices, weights, gate_up, down, gate_up_bias, down_bias,
                           activation, alpha, limit)


def moe_index(indices, num_experts, block_m):
    return ref.moe_index(indices, num_experts, block_m)


def mxfp4_quantize(w):
    return ref.mxfp4_quantize(w)


def mxfp4_dequantize(blocks, scales, dtype):
    return ref.mxfp4_dequantize(blocks, scales, dtype)


def _contiguous_outputs(fn):
    """Ops return contiguous tensors (the fakes promise it); the reference need not care."""
    def op(*args):
        out = fn(*args)
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return tuple(t.contiguous() for t in out)
    return op


_registry.define("ref_", {name: _contiguous_outputs(globals()[name]) for name in _registry.SCHEMAS},
                 dispatch_keys=("CPU", "CUDA"))
