"""Experts: gptcore.moe_experts and gptcore.moe, and the specs of the moe_experts_fwd / _bwd and
moe_experts_mxfp4 ops (schema, check, fake, autograd, reference)."""
import torch
import torch.nn.functional as F

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.mxfp4 import MXFP4Tensor, check_blocks
from gptcore.ops.route import route
from gptcore.ops.spec import declare, differentiate, run
from gptcore.ops.validate import FLOAT_DTYPES

ACTIVATIONS = ("silu", "gelu", "gpt_oss")
INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def moe_experts(x, indices, weights, gate_up_proj, down_proj, *, activation="silu",
                gate_up_bias=None, down_bias=None, alpha=1.702, limit=7.0):
    """y[t] = sum_j weights[t, j] * expert_{indices[t, j]}(x[t]); index -1 adds nothing.

    x (T, H); indices, weights (T, k); gate_up_proj (E, 2I, H); down_proj (E, H, I), float
    tensors or both gptcore.MXFP4Tensor (inference only). Returns (T, H) in x's dtype."""
    validate.tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)     # before x.device is read
    quantized = [isinstance(w, MXFP4Tensor) for w in (gate_up_proj, down_proj)]
    if quantized[0] != quantized[1]:
        raise TypeError("gate_up_proj, down_proj: expected both float tensors or both "
                        f"MXFP4Tensor, got {type(gate_up_proj).__name__} and "
                        f"{type(down_proj).__name__}")
    if not quantized[0]:
        validate.tensor("gate_up_proj", gate_up_proj, ndim=3, dtypes=FLOAT_DTYPES)
        validate.tensor("down_proj", down_proj, ndim=3, dtypes=FLOAT_DTYPES)
    for name, w in (("gate_up_proj", gate_up_proj), ("down_proj", down_proj)):
        if w.dim() != 3:
            raise ValueError(f"{name}: expected a 3-D tensor (E, N, K), got {tuple(w.shape)}")
        validate.same_device(name, w, x)
    flags = (activation, float(alpha), float(limit))
    if quantized[0]:
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError("gate_up_proj: MXFP4 experts are inference-only; call under "
                             "torch.no_grad() or use float weights to train")
        return run("moe_experts_mxfp4", x.device, x, _long(indices), weights, gate_up_proj.blocks,
                   gate_up_proj.scales, down_proj.blocks, down_proj.scales, gate_up_bias,
                   down_bias, *flags)
    return run("moe_experts_fwd", x.device, x, _long(indices), weights, gate_up_proj, down_proj,
               gate_up_bias, down_bias, *flags)


def _long(indices):
    """int64 ids for the ops; anything else is left for the check to name."""
    if isinstance(indices, torch.Tensor) and indices.dtype in INDEX_DTYPES:
        return indices.long()
    return indices


def moe(x, router_weight, gate_up_proj, down_proj, top_k, *, router_bias=None,
        scoring="softmax", renormalize=True, bias=None, **expert_kwargs):
    """A whole MoE layer: router Linear (weight (E, H)) -> route -> experts.

    Returns y (T, H) and aux {"router_logits", "load_balancing_loss", "z_loss",
    "tokens_per_expert"}."""
    validate.tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    validate.tensor("router_weight", router_weight, ndim=2, dtypes=FLOAT_DTYPES)
    validate.experts("router_weight", router_weight.shape[0], tuple(router_weight.shape))
    if router_weight.shape[1] != x.shape[1]:
        raise ValueError(f"router_weight: expected shape (E, {x.shape[1]}), got "
                         f"{tuple(router_weight.shape)}")
    logits = F.linear(x, router_weight, router_bias)                # (T, E)
    weights, indices = route(logits, top_k, scoring=scoring, renormalize=renormalize, bias=bias)
    y = moe_experts(x, indices, weights, gate_up_proj, down_proj, **expert_kwargs)
    return y, ref.moe_aux(logits, indices, router_weight.shape[0])


# ----------------------------------------------------------------------------- checks

def _check(x, indices, weights, gate_up_shape, down_shape, activation, gate_up_bias, down_bias,
           dtypes):
    """The experts' arguments, given the (logical) shapes of float or MXFP4 weights."""
    validate.tensor("x", x, ndim=2, dtypes=dtypes)
    validate.tensor("indices", indices, ndim=2, dtypes=INDEX_DTYPES)
    validate.tensor("weights", weights, ndim=2, dtypes=dtypes)
    T, H = x.shape
    if tuple(indices.shape[:1]) != (T,) or indices.shape != weights.shape:
        raise ValueError(f"indices, weights: expected shape ({T}, k), got {tuple(indices.shape)} "
                         f"and {tuple(weights.shape)}")
    validate.same_device("indices", indices, x)
    validate.same_device("weights", weights, x)
    if indices.shape[1] == 0:
        raise ValueError(f"indices: expected top_k >= 1 choices per token, got shape "
                         f"{tuple(indices.shape)}")
    if H == 0:
        raise ValueError(f"x: expected a hidden size H >= 1, got shape {tuple(x.shape)}")
    E, two_i, h = gate_up_shape
    validate.experts("gate_up_proj", E, tuple(gate_up_shape))
    if h != H or two_i % 2 != 0:
        raise ValueError(f"gate_up_proj: expected shape (E, 2I, {H}), got {tuple(gate_up_shape)}")
    if two_i == 0:
        raise ValueError(f"gate_up_proj: expected an intermediate size I >= 1, got shape "
                         f"{tuple(gate_up_shape)}")
    if tuple(down_shape) != (E, H, two_i // 2):
        raise ValueError(f"down_proj: expected shape ({E}, {H}, {two_i // 2}) to match "
                         f"gate_up_proj {tuple(gate_up_shape)}, got {tuple(down_shape)}")
    validate.choice("activation", activation, ACTIVATIONS)
    validate.optional_tensor("gate_up_bias", gate_up_bias, (E, two_i), x, dtypes)
    validate.optional_tensor("down_bias", down_bias, (E, H), x, dtypes)
    if validate.eager() and indices.device.type == "cpu" and indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < -1 or high >= E:
            raise ValueError(f"indices: expected expert ids in [0, {E}) or -1, "
                             f"got {low if low < -1 else high}")


def check_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias, activation,
              *flags, dtypes=FLOAT_DTYPES):
    validate.tensor("gate_up_proj", gate_up_proj, ndim=3, dtypes=dtypes)
    validate.tensor("down_proj", down_proj, ndim=3, dtypes=dtypes)
    _check(x, indices, weights, gate_up_proj.shape, down_proj.shape, activation, gate_up_bias,
           down_bias, dtypes)


def check_bwd(dy, x, *rest, dtypes=FLOAT_DTYPES):
    check_fwd(x, *rest, dtypes=dtypes)
    validate.tensor("dy", dy, dtypes=dtypes)
    if dy.shape != x.shape:
        raise ValueError(f"dy: expected x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")


def check_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks, down_scales,
                gate_up_bias, down_bias, activation, *flags, dtypes=FLOAT_DTYPES):
    for name, blocks, scales in (("gate_up", gate_up_blocks, gate_up_scales),
                                 ("down", down_blocks, down_scales)):
        validate.tensor(f"{name}_blocks", blocks, ndim=3, dtypes=(torch.uint8,))
        check_blocks(blocks, scales, f"{name}_blocks", f"{name}_scales")
    logical = [(*b.shape[:2], 2 * b.shape[2]) for b in (gate_up_blocks, down_blocks)]
    _check(x, indices, weights, *logical, activation, gate_up_bias, down_bias, dtypes)


# ----------------------------------------------------------------------------- reference

def reference_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                  activation, alpha, limit):
    return ref.moe_experts(x, indices, weights, gate_up_proj, down_proj, activation=activation,
                           gate_up_bias=gate_up_bias, down_bias=down_bias, alpha=alpha,
                           limit=limit)


def reference_bwd(dy, x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                  *flags):
    def forward(x, weights, gate_up, down, gate_up_bias, down_bias):
        return reference_fwd(x, indices, weights, gate_up, down, gate_up_bias, down_bias, *flags)
    return differentiate(forward, (x, weights, gate_up_proj, down_proj, gate_up_bias, down_bias),
                         dy)


def reference_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks,
                    down_scales, gate_up_bias, down_bias, *flags):
    gate_up = ref.mxfp4_dequantize(gate_up_blocks, gate_up_scales, torch.float32)
    down = ref.mxfp4_dequantize(down_blocks, down_scales, torch.float32)
    return reference_fwd(x, indices, weights, gate_up, down, gate_up_bias, down_bias, *flags)


# ----------------------------------------------------------------------------- fakes, autograd

def _fwd_fake(x, *rest):
    return x.new_empty(x.shape)


def _bwd_fake(dy, x, indices, weights, gate_up, down, gate_up_bias, down_bias, *flags):
    def like(t):
        return t.new_empty(t.shape) if t is not None else x.new_empty(0)
    # weight gradients keep the weights' strides (K-major experts), as the kernels return them
    return (like(x), like(weights), torch.empty_like(gate_up), torch.empty_like(down),
            like(gate_up_bias), like(down_bias))


def _none_if_absent(grad, tensor):
    return grad if tensor is not None else None


def _autograd(bwd_name):
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


EXPERT_FLAGS = "str activation, float alpha, float limit"
BIASES = "Tensor? gate_up_bias, Tensor? down_bias"
declare(name="moe_experts_fwd", schema="(Tensor x, Tensor indices, Tensor weights, "
        f"Tensor gate_up_proj, Tensor down_proj, {BIASES}, {EXPERT_FLAGS}) -> Tensor",
        check=check_fwd, fake=_fwd_fake, reference=reference_fwd, backward="moe_experts_bwd",
        autograd=_autograd)
declare(name="moe_experts_bwd", schema="(Tensor dy, Tensor x, Tensor indices, Tensor weights, "
        f"Tensor gate_up_proj, Tensor down_proj, {BIASES}, {EXPERT_FLAGS}) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)", check=check_bwd, fake=_bwd_fake,
        reference=reference_bwd)
declare(name="moe_experts_mxfp4", schema="(Tensor x, Tensor indices, Tensor weights, "
        "Tensor gate_up_blocks, Tensor gate_up_scales, Tensor down_blocks, Tensor down_scales, "
        f"{BIASES}, {EXPERT_FLAGS}) -> Tensor", check=check_mxfp4, fake=_fwd_fake,
        reference=reference_mxfp4)
