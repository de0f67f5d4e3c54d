"""The pure-PyTorch reference as the `ref_` backend ops (see _registry.py).

Forward ops call gptcore.ref; backward ops recompute the forward under autograd and
differentiate it, so the reference's gradients are torch's own."""
import torch

from gptcore import ref
from gptcore.ops import _registry, validate


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


def attention_fwd(q, k, v, sinks, scale, window_left, window_right, softcap):
    return ref.attention(q, k, v, scale=scale,
                         window=(window_left, window_right), sinks=sinks,
                         softcap=_softcap(softcap), return_lse=True)


def attention_bwd(dout, dlse, q, k, v, out, lse, sinks, scale, window_left,
                  window_right, softcap):
    with torch.enable_grad(), _autograd_on():
        q, k, v, sinks = _leaves(q, k, v, sinks)
        o, l = attention_fwd(q, k, v, sinks, scale, window_left, window_right, softcap)
        dq, dk, dv, ds = _grads((o, l), (q, k, v, sinks), (dout, dlse))
    return dq, dk, dv, ds


def attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sinks,
                         scale, window_left, window_right, softcap):
    return ref.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                scale=scale,
                                window=(window_left, window_right), sinks=sinks,
                                softcap=_softcap(softcap), return_lse=True)


def attention_varlen_bwd(dout, dlse, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                         max_seqlen_k, out, lse, sinks, scale, window_left, window_right,
                         softcap):
    with torch.enable_grad(), _autograd_on():
        q, k, v, sinks = _leaves(q, k, v, sinks)
        o, l = attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                    max_seqlen_k, sinks, scale, window_left, window_right,
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


def mxfp4_quantize(w):
    return ref.mxfp4_quantize(w)


def mxfp4_dequantize(blocks, scales, dtype):
    return ref.mxfp4_dequantize(blocks, scales, dtype)


# The reference also runs fp64 (torch.autograd.gradcheck needs it).
_DTYPES = validate.FLOAT_DTYPES + (torch.float64,)


def _check_attention(q, k, v, *rest):
    if q.dim() == 3:        # varlen: offsets, max lengths, sinks follow v
        validate.attention_varlen(q, k, v, *rest[:4], _DTYPES)
        rest = rest[4:]
    validate.attention_op(q, k, v, rest[0], q.dim(), _DTYPES)


def _check_attention_bwd(dout, dlse, q, k, v, *rest):
    offsets, (out, lse, sinks) = rest[:-7], rest[-7:-4]      # then the four flags
    _check_attention(q, k, v, *offsets, sinks)
    validate.attention_grads_op(q, out, dout, lse, dlse, _DTYPES)


def _check_route_bwd(dweights, logits, indices, scoring, renormalize, bias):
    validate.route(logits, indices.shape[1] if indices.dim() == 2 else 0, scoring, renormalize,
                   bias, _DTYPES)
    validate.tensor("indices", indices, ndim=2, dtypes=(torch.int64, torch.int32))
    if indices.shape[0] != logits.shape[0] or dweights.shape != indices.shape:
        raise ValueError(f"indices, dweights: expected shape ({logits.shape[0]}, k), got "
                         f"{tuple(indices.shape)} and {tuple(dweights.shape)}")


def _check_experts(x, indices, weights, gate_up, down, gate_up_bias, down_bias, activation,
                   *flags):
    validate.experts_op(x, indices, weights, gate_up.shape, down.shape, activation, gate_up_bias,
                        down_bias, _DTYPES)


def _check_experts_bwd(dy, x, *rest):
    _check_experts(x, *rest)
    if dy.shape != x.shape:
        raise ValueError(f"dy: expected x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")


def _check_experts_mxfp4(x, indices, weights, gub, gus, dnb, dns, gate_up_bias, down_bias,
                         activation, *flags):
    for name, t in (("gate_up_blocks", gub), ("gate_up_scales", gus), ("down_blocks", dnb),
                    ("down_scales", dns)):
        validate.tensor(name, t, ndim=3, dtypes=(torch.uint8,))
    validate.experts_op(x, indices, weights, (*gub.shape[:2], 2 * gub.shape[2]),
                        (*dnb.shape[:2], 2 * dnb.shape[2]), activation, gate_up_bias, down_bias,
                        _DTYPES)


def _check_dequantize(blocks, scales, dtype):
    validate.tensor("blocks", blocks, dtypes=(torch.uint8,))
    validate.tensor("scales", scales, dtypes=(torch.uint8,))
    if blocks.dim() < 1 or tuple(scales.shape) != (*blocks.shape[:-1], blocks.shape[-1] // 16):
        raise ValueError(f"scales: expected shape (..., K/32) for blocks {tuple(blocks.shape)}, "
                         f"got {tuple(scales.shape)}")


# The argument checks of each op (direct calls skip the public functions' validation).
_CHECKS = {
    "attention_fwd": _check_attention,
    "attention_varlen_fwd": _check_attention,
    "attention_bwd": _check_attention_bwd,
    "attention_varlen_bwd": _check_attention_bwd,
    "route": lambda *args: validate.route(*args, _DTYPES),
    "route_bwd": _check_route_bwd,
    "moe_experts_fwd": _check_experts,
    "moe_experts_bwd": _check_experts_bwd,
    "moe_experts_mxfp4": _check_experts_mxfp4,
    "mxfp4_quantize": validate.mxfp4_input,
    "mxfp4_dequantize": _check_dequantize,
}


def _contiguous_outputs(name, fn):
    """Checks the op's arguments; returns contiguous tensors (the fakes promise it)."""
    def op(*args):
        _CHECKS[name](*args)
        out = fn(*args)
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return tuple(t.contiguous() for t in out)
    return op


_registry.define("ref_", {name: _contiguous_outputs(name, globals()[name])
                          for name in _registry.SCHEMAS},
                 dispatch_keys=("CPU", "CUDA"))
