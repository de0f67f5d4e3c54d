"""Op schemas shared by every backend, and their fake (meta) and autograd registrations.

Each backend exposes the same ops under its own prefix in the `gptcore` namespace:
  C++ extension  torch.ops.gptcore.<name>          (CPU kernels in csrc/<family>/<op>_cpu.cpp)
  Triton         torch.ops.gptcore.triton_<name>   (gptcore/backends/triton/__init__.py)
  reference      torch.ops.gptcore.ref_<name>      (gptcore/backends/ref/ops.py)
so the public functions pick a prefix and call one op, which torch.compile sees as one node.
A backward op takes the forward's inputs and outputs and returns one gradient per
differentiable input (an empty tensor where that input was None). Every op returns
contiguous tensors, whatever the strides of its inputs.
"""
import torch

# op name -> schema without the name: the one definition of every op, C++ ones included (the
# extension only registers CPU kernels for them). Attention takes the mask as flash-attn's
# (window_left, window_right), causal already folded in by gptcore.ops.attention.
SCHEMAS = {
    "attention_fwd": "(Tensor q, Tensor k, Tensor v, Tensor? sinks, float scale, "
                     "int window_left, int window_right, float softcap) -> (Tensor, Tensor)",
    "attention_bwd": "(Tensor dout, Tensor dlse, Tensor q, Tensor k, Tensor v, Tensor out, "
                     "Tensor lse, Tensor? sinks, float scale, int window_left, "
                     "int window_right, float softcap) -> (Tensor, Tensor, Tensor, Tensor)",
    "attention_varlen_fwd": "(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, "
                            "Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, "
                            "Tensor? sinks, float scale, int window_left, "
                            "int window_right, float softcap) -> (Tensor, Tensor)",
    "attention_varlen_bwd": "(Tensor dout, Tensor dlse, Tensor q, Tensor k, Tensor v, "
                            "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, "
                            "int max_seqlen_k, Tensor out, Tensor lse, Tensor? sinks, float scale, "
                            "int window_left, int window_right, float softcap) "
                            "-> (Tensor, Tensor, Tensor, Tensor)",
    "route": "(Tensor logits, int top_k, str scoring, bool renormalize, Tensor? bias) "
             "-> (Tensor, Tensor)",
    "route_bwd": "(Tensor dweights, Tensor logits, Tensor indices, str scoring, bool renormalize, "
                 "Tensor? bias) -> Tensor",
    "moe_experts_fwd": "(Tensor x, Tensor indices, Tensor weights, Tensor gate_up_proj, "
                       "Tensor down_proj, Tensor? gate_up_bias, Tensor? down_bias, str activation, "
                       "float alpha, float limit) -> Tensor",
    "moe_experts_bwd": "(Tensor dy, Tensor x, Tensor indices, Tensor weights, Tensor gate_up_proj, "
                       "Tensor down_proj, Tensor? gate_up_bias, Tensor? down_bias, str activation, "
                       "float alpha, float limit) "
                       "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "moe_experts_mxfp4": "(Tensor x, Tensor indices, Tensor weights, Tensor gate_up_blocks, "
                         "Tensor gate_up_scales, Tensor down_blocks, Tensor down_scales, "
                         "Tensor? gate_up_bias, Tensor? down_bias, str activation, float alpha, "
                         "float limit) -> Tensor",
    "mxfp4_quantize": "(Tensor w) -> (Tensor, Tensor)",
    "mxfp4_dequantize": "(Tensor blocks, Tensor scales, ScalarType dtype) -> Tensor",
}

_lib = torch.library.Library("gptcore", "FRAGMENT")


def _like(t):
    """A contiguous tensor of t's shape, dtype and device."""
    return t.new_empty(t.shape)


def define(prefix, impls, dispatch_keys):
    """Defines `gptcore::<prefix><name>` for each name -> Python impl, for the given devices."""
    for name, fn in impls.items():
        _lib.define(prefix + name + SCHEMAS[name])
        for key in dispatch_keys:
            _lib.impl(prefix + name, fn, key)
    register_meta(prefix, impls.keys())


def has_op(qualname, dispatch_key):
    """Whether op `gptcore::<qualname>` exists with a kernel for `dispatch_key`."""
    name = f"gptcore::{qualname}"
    return (torch._C._dispatch_has_kernel(name)
            and torch._C._dispatch_has_kernel_for_dispatch_key(name, dispatch_key))


# ----------------------------------------------------------------------------- fakes

def _attention_fwd_fake(q, k, v, sinks, scale, window_left, window_right, softcap):
    B, Hq, Sq, _ = q.shape
    return q.new_empty(B, Hq, Sq, v.shape[-1]), q.new_empty(B, Hq, Sq, dtype=torch.float32)


def _attention_varlen_fwd_fake(q, k, v, cu_q, cu_k, max_q, max_k, sinks, *args):
    Tq, Hq, _ = q.shape
    return q.new_empty(Tq, Hq, v.shape[-1]), q.new_empty(Tq, Hq, dtype=torch.float32)


def _attention_bwd_fake(dout, dlse, q, k, v, *rest):
    sinks = rest[-5]
    ds = _like(sinks) if sinks is not None else q.new_empty(0)
    return _like(q), _like(k), _like(v), ds


def _route_fake(logits, top_k, scoring, renormalize, bias):
    T = logits.shape[0]
    return (logits.new_empty(T, top_k, dtype=torch.float32),
            logits.new_empty(T, top_k, dtype=torch.int64))


def _route_bwd_fake(dweights, logits, indices, scoring, renormalize, bias):
    return _like(logits)


def _moe_experts_fwd_fake(x, *args):
    return _like(x)


def _moe_experts_bwd_fake(dy, x, indices, weights, gate_up, down, gate_up_bias, down_bias, *args):
    def like(t):
        return _like(t) if t is not None else x.new_empty(0)
    # weight gradients keep the weights' strides (K-major experts), as the kernels return them
    return (_like(x), _like(weights), torch.empty_like(gate_up), torch.empty_like(down),
            like(gate_up_bias), like(down_bias))


def _mxfp4_quantize_fake(w):
    *lead, K = w.shape
    return (w.new_empty(*lead, K // 2, dtype=torch.uint8),
            w.new_empty(*lead, K // 32, dtype=torch.uint8))


def _mxfp4_dequantize_fake(blocks, scales, dtype):
    *lead, half = blocks.shape
    return blocks.new_empty(*lead, 2 * half, dtype=dtype)


_FAKES = {
    "attention_fwd": _attention_fwd_fake,
    "attention_bwd": _attention_bwd_fake,
    "attention_varlen_fwd": _attention_varlen_fwd_fake,
    "attention_varlen_bwd": _attention_bwd_fake,
    "route": _route_fake,
    "route_bwd": _route_bwd_fake,
    "moe_experts_fwd": _moe_experts_fwd_fake,
    "moe_experts_bwd": _moe_experts_bwd_fake,
    "moe_experts_mxfp4": _moe_experts_fwd_fake,
    "mxfp4_quantize": _mxfp4_quantize_fake,
    "mxfp4_dequantize": _mxfp4_dequantize_fake,
}


# ----------------------------------------------------------------------------- autograd

def _none_if_absent(grad, tensor):
    return grad if tensor is not None else None


def _attention_autograd(bwd_name, n_static):
    """Autograd for attention_fwd / attention_varlen_fwd: `n_static` inputs sit between v and
    sinks (the varlen offsets), and the trailing inputs are non-differentiable flags."""
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


def _route_autograd(bwd_name):
    def setup(ctx, inputs, output):
        logits, top_k, scoring, renormalize, bias = inputs
        ctx.args = (scoring, renormalize)
        ctx.save_for_backward(logits, output[1], bias)

    def backward(ctx, dweights, dindices):
        logits, indices, bias = ctx.saved_tensors
        dlogits = getattr(torch.ops.gptcore, bwd_name)(dweights, logits, indices, *ctx.args, bias)
        return dlogits, None, None, None, None
    return setup, backward


def _moe_experts_autograd(bwd_name):
    def setup(ctx, inputs, output):
        ctx.flags = inputs[7:]
        ctx.save_for_backward(*inputs[:7])

    def backward(ctx, dy):
        x, indices, weights, gate_up, down, gate_up_bias, down_bias = ctx.saved_tensors
        dx, dw, dgu, ddown, dgub, ddb = getattr(torch.ops.gptcore, bwd_name)(
            dy, x, indices, weights, gate_up, down, gate_up_bias, down_bias, *ctx.flags)
        return (dx, None, dw, dgu, ddown, _none_if_absent(dgub, gate_up_bias),
                _none_if_absent(ddb, down_bias), None, None, None)
    return setup, backward


_AUTOGRAD = {
    "attention_fwd": ("attention_bwd", lambda bwd: _attention_autograd(bwd, 0)),
    "attention_varlen_fwd": ("attention_varlen_bwd", lambda bwd: _attention_autograd(bwd, 4)),
    "route": ("route_bwd", _route_autograd),
    "moe_experts_fwd": ("moe_experts_bwd", _moe_experts_autograd),
}


def register_meta(prefix, names):
    """Registers fake kernels for ops `<prefix><name>` and autograd for forward ops whose
    backward op exists under the same prefix."""
    names = set(names)
    for name in names:
        torch.library.register_fake(f"gptcore::{prefix}{name}", _FAKES[name], lib=_lib)
    for name in names & _AUTOGRAD.keys():
        bwd, make = _AUTOGRAD[name]
        if bwd in names:
            setup, backward = make(prefix + bwd)
            torch.library.register_autograd(f"gptcore::{prefix}{name}", backward,
                                            setup_context=setup, lib=_lib)


def register_cpp_ops():
    """Schemas, fakes and autograd for the ops the C++ extension registered CPU kernels for
    (called once it is loaded)."""
    names = [n for n in SCHEMAS if torch._C._dispatch_has_kernel_for_dispatch_key(
        f"gptcore::{n}", "CPU")]
    for name in names:
        _lib.define(name + SCHEMAS[name])
    register_meta("", names)
