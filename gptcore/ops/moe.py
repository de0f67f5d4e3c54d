"""gptcore.route, gptcore.moe_experts and gptcore.moe: validate, choose a backend, call its op."""
import torch
import torch.nn.functional as F

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.backend import select
from gptcore.ops.mxfp4 import MXFP4Tensor


def route(logits, top_k, *, scoring="softmax", renormalize=True, bias=None):
    """logits (T, E) -> (weights (T, k) fp32, indices (T, k) int64), each row best first
    (ties: lower expert index). Scoring modes "softmax", "topk_softmax", "sigmoid"."""
    validate.route(logits, top_k, scoring, renormalize, bias)
    return select("route", logits.device)(logits, top_k, scoring, renormalize, bias)


def moe_experts(x, indices, weights, gate_up_proj, down_proj, *, activation="silu",
                gate_up_bias=None, down_bias=None, alpha=1.702, limit=7.0):
    """y[t] = sum_j weights[t, j] * expert_{indices[t, j]}(x[t]); index -1 adds nothing.

    x (T, H); indices, weights (T, k); gate_up_proj (E, 2I, H); down_proj (E, H, I), float
    tensors or both gptcore.MXFP4Tensor (inference only). Returns (T, H) in x's dtype."""
    validate.tensor("x", x, ndim=2, dtypes=validate.FLOAT_DTYPES)     # before x.device is read
    quantized = [isinstance(w, MXFP4Tensor) for w in (gate_up_proj, down_proj)]
    if quantized[0] != quantized[1]:
        raise TypeError("gate_up_proj, down_proj: expected both float tensors or both "
                        f"MXFP4Tensor, got {type(gate_up_proj).__name__} and "
                        f"{type(down_proj).__name__}")
    if not quantized[0]:
        validate.tensor("gate_up_proj", gate_up_proj, ndim=3, dtypes=validate.FLOAT_DTYPES)
        validate.tensor("down_proj", down_proj, ndim=3, dtypes=validate.FLOAT_DTYPES)
    for name, w in (("gate_up_proj", gate_up_proj), ("down_proj", down_proj)):
        if w.dim() != 3:
            raise ValueError(f"{name}: expected a 3-D tensor (E, N, K), got {tuple(w.shape)}")
        validate.same_device(name, w, x)
    E = gate_up_proj.shape[0]
    validate.moe_experts(x, indices, weights, gate_up_proj.shape, down_proj.shape, E, activation,
                         gate_up_bias, down_bias, x)
    indices = indices.long()
    flags = (activation, float(alpha), float(limit))
    if quantized[0]:
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError("gate_up_proj: MXFP4 experts are inference-only; call under "
                             "torch.no_grad() or use float weights to train")
        op = select("moe_experts_mxfp4", x.device)
        return op(x, indices, weights, gate_up_proj.blocks, gate_up_proj.scales,
                  down_proj.blocks, down_proj.scales, gate_up_bias, down_bias, *flags)
    op = select("moe_experts_fwd", x.device)
    return op(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias, *flags)


def load_balancing_loss(logits, indices, num_experts):
    """Switch-style E * sum_e f_e * P_e as Hugging Face computes it (equals k when balanced)."""
    validate.tensor("logits", logits, ndim=2, dtypes=validate.FLOAT_DTYPES)
    validate.integer("num_experts", num_experts, 1)
    validate.tensor("indices", indices, ndim=2)
    return ref.load_balancing_loss(logits, indices.long(), num_experts)


def router_z_loss(logits):
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)**2."""
    validate.tensor("logits", logits, ndim=2, dtypes=validate.FLOAT_DTYPES)
    return ref.router_z_loss(logits)


def moe(x, router_weight, gate_up_proj, down_proj, top_k, *, router_bias=None,
        scoring="softmax", renormalize=True, bias=None, **expert_kwargs):
    """A whole MoE layer: router Linear (weight (E, H)) -> route -> experts.

    Returns y (T, H) and aux {"router_logits", "load_balancing_loss", "z_loss",
    "tokens_per_expert"}."""
    validate.tensor("x", x, ndim=2, dtypes=validate.FLOAT_DTYPES)
    validate.tensor("router_weight", router_weight, ndim=2, dtypes=validate.FLOAT_DTYPES)
    validate.experts("router_weight", router_weight.shape[0], tuple(router_weight.shape))
    if router_weight.shape[1] != x.shape[1]:
        raise ValueError(f"router_weight: expected shape (E, {x.shape[1]}), got "
                         f"{tuple(router_weight.shape)}")
    logits = F.linear(x, router_weight, router_bias)                # (T, E)
    weights, indices = route(logits, top_k, scoring=scoring, renormalize=renormalize, bias=bias)
    y = moe_experts(x, indices, weights, gate_up_proj, down_proj, **expert_kwargs)
    return y, ref.moe_aux(logits, indices, router_weight.shape[0])
