"""The Triton MoE kernels (gptcore.backends.triton.kernels.moe) as the `triton_` ops route, route_bwd,
moe_experts_fwd, moe_experts_bwd and moe_experts_mxfp4 (schemas in _registry.py).
CPU tensors run only under TRITON_INTERPRET=1 (backend.py refuses them otherwise)."""
import torch

from gptcore.backends.triton.kernels import moe
from gptcore.ops import _registry, validate


def route(logits, top_k, scoring, renormalize, bias):
    validate.route(logits, top_k, scoring, renormalize, bias)
    return moe.route(logits, top_k, scoring, renormalize, bias)


def route_bwd(dweights, logits, indices, scoring, renormalize, bias):
    # `bias` only moves the selection, which `indices` already records.
    validate.tensor("logits", logits, ndim=2, dtypes=validate.FLOAT_DTYPES)
    validate.tensor("indices", indices, ndim=2, dtypes=(torch.int64, torch.int32))
    validate.tensor("dweights", dweights, ndim=2, dtypes=validate.FLOAT_DTYPES)
    if indices.shape[0] != logits.shape[0] or dweights.shape != indices.shape:
        raise ValueError(f"indices, dweights: expected shape ({logits.shape[0]}, k), got "
                         f"{tuple(indices.shape)} and {tuple(dweights.shape)}")
    return moe.route_bwd(dweights, logits, indices, scoring, renormalize)


def moe_experts_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                    activation, alpha, limit):
    validate.experts_op(x, indices, weights, gate_up_proj.shape, down_proj.shape, activation,
                        gate_up_bias, down_bias)
    return moe.experts_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                           activation, alpha, limit)


def moe_experts_bwd(dy, x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                    activation, alpha, limit):
    validate.experts_op(x, indices, weights, gate_up_proj.shape, down_proj.shape, activation,
                        gate_up_bias, down_bias)
    validate.tensor("dy", dy, dtypes=validate.FLOAT_DTYPES)
    if dy.shape != x.shape:
        raise ValueError(f"dy: expected x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    return moe.experts_bwd(dy, x, indices, weights, gate_up_proj, down_proj, gate_up_bias,
                           down_bias, activation, alpha, limit)


def moe_experts_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks,
                      down_scales, gate_up_bias, down_bias, activation, alpha, limit):
    _mxfp4_weights(gate_up_blocks, gate_up_scales, down_blocks, down_scales)
    E, two_i, half_h = gate_up_blocks.shape
    validate.experts_op(x, indices, weights, (E, two_i, 2 * half_h),
                        (*down_blocks.shape[:2], 2 * down_blocks.shape[2]), activation,
                        gate_up_bias, down_bias)
    return moe.experts_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks,
                             down_scales, gate_up_bias, down_bias, activation, alpha, limit)


def _mxfp4_weights(gate_up_blocks, gate_up_scales, down_blocks, down_scales):
    """uint8 blocks (E, N, K/2) with scales (E, N, K/32): whole blocks of 32 values."""
    for blocks, scales, name in ((gate_up_blocks, gate_up_scales, "gate_up"),
                                 (down_blocks, down_scales, "down")):
        validate.tensor(f"{name}_blocks", blocks, ndim=3, dtypes=(torch.uint8,))
        validate.tensor(f"{name}_scales", scales, ndim=3, dtypes=(torch.uint8,))
        want = (*blocks.shape[:2], blocks.shape[2] // 16)
        if blocks.shape[2] % 16 != 0 or tuple(scales.shape) != want:
            raise ValueError(f"{name}_scales: expected shape {want} for blocks "
                             f"{tuple(blocks.shape)} (K a multiple of 32), got "
                             f"{tuple(scales.shape)}")


_registry.define("triton_", {"route": route, "route_bwd": route_bwd,
                             "moe_experts_fwd": moe_experts_fwd,
                             "moe_experts_bwd": moe_experts_bwd,
                             "moe_experts_mxfp4": moe_experts_mxfp4},
                 dispatch_keys=("CUDA", "CPU"))
