"""Routing: gptcore.route and the router losses, and the specs of the route / route_bwd ops
(schema, check, fake, autograd, reference)."""
import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, differentiate, run
from gptcore.ops.validate import FLOAT_DTYPES

SCORING = ("softmax", "topk_softmax", "sigmoid")


def route(logits, top_k, *, scoring="softmax", renormalize=True, bias=None):
    """logits (T, E) -> (weights (T, k) fp32, indices (T, k) int64), each row best first
    (ties: lower expert index). Scoring modes "softmax", "topk_softmax", "sigmoid"."""
    validate.tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)   # before logits.device
    return run("route", logits.device, logits, top_k, scoring, renormalize, bias)


def load_balancing_loss(logits, indices, num_experts):
    """Switch-style E * sum_e f_e * P_e as Hugging Face computes it (equals k when balanced)."""
    validate.tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    validate.integer("num_experts", num_experts, 1)
    validate.tensor("indices", indices, ndim=2)
    return ref.load_balancing_loss(logits, indices.long(), num_experts)


def router_z_loss(logits):
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)**2."""
    validate.tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    return ref.router_z_loss(logits)


# ----------------------------------------------------------------------------- checks

def check(logits, top_k, scoring, renormalize, bias, dtypes=FLOAT_DTYPES):
    validate.tensor("logits", logits, ndim=2, dtypes=dtypes)
    validate.experts("logits", logits.shape[1], tuple(logits.shape))
    validate.integer("top_k", top_k, 1, logits.shape[1])
    validate.choice("scoring", scoring, SCORING)
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize: expected a bool, got {type(renormalize).__name__}")
    if bias is not None and scoring != "sigmoid":
        raise ValueError(f"bias: only scoring='sigmoid' takes a selection bias, got scoring="
                         f"{scoring!r}")
    validate.optional_tensor("bias", bias, (logits.shape[1],), logits, dtypes)


def check_bwd(dweights, logits, indices, scoring, renormalize, bias, dtypes=FLOAT_DTYPES):
    validate.tensor("indices", indices, ndim=2, dtypes=(torch.int64, torch.int32))
    check(logits, indices.shape[1], scoring, renormalize, bias, dtypes)
    validate.tensor("dweights", dweights, ndim=2, dtypes=dtypes)
    if indices.shape[0] != logits.shape[0] or dweights.shape != indices.shape:
        raise ValueError(f"indices, dweights: expected shape ({logits.shape[0]}, k), got "
                         f"{tuple(indices.shape)} and {tuple(dweights.shape)}")


# ----------------------------------------------------------------------------- reference

def reference(logits, top_k, scoring, renormalize, bias):
    return ref.route(logits, top_k, scoring=scoring, renormalize=renormalize, bias=bias)


def reference_bwd(dweights, logits, indices, scoring, renormalize, bias):
    def weights(leaf):
        return reference(leaf, indices.shape[1], scoring, renormalize, bias)[0]
    return differentiate(weights, (logits,), dweights)[0]


# ----------------------------------------------------------------------------- fakes, autograd

def _fake(logits, top_k, scoring, renormalize, bias):
    T = logits.shape[0]
    return (logits.new_empty(T, top_k, dtype=torch.float32),
            logits.new_empty(T, top_k, dtype=torch.int64))


def _bwd_fake(dweights, logits, indices, scoring, renormalize, bias):
    return logits.new_empty(logits.shape)


def _autograd(bwd_name):
    def setup(ctx, inputs, output):
        logits, top_k, scoring, renormalize, bias = inputs
        ctx.args = (scoring, renormalize)
        ctx.save_for_backward(logits, output[1], bias)

    def backward(ctx, dweights, dindices):
        logits, indices, bias = ctx.saved_tensors
        dlogits = getattr(torch.ops.gptcore, bwd_name)(dweights, logits, indices, *ctx.args, bias)
        return dlogits, None, None, None, None
    return setup, backward


declare(name="route", schema="(Tensor logits, int top_k, str scoring, bool renormalize, "
        "Tensor? bias) -> (Tensor, Tensor)", check=check, fake=_fake, reference=reference,
        backward="route_bwd", autograd=_autograd)
declare(name="route_bwd", schema="(Tensor dweights, Tensor logits, Tensor indices, str scoring, "
        "bool renormalize, Tensor? bias) -> Tensor", check=check_bwd, fake=_bwd_fake,
        reference=reference_bwd)
