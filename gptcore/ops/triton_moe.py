"""The Triton MoE kernels (gptcore.kernels.moe) as the `triton_` ops route, route_bwd,
moe_experts_fwd, moe_experts_bwd and moe_experts_mxfp4 (schemas in _registry.py).
CPU tensors run only under TRITON_INTERPRET=1 (backend.py refuses them otherwise)."""
from gptcore.kernels import moe
from gptcore.ops import _registry


def route(logits, top_k, scoring, renormalize, bias):
    return moe.route(logits, top_k, scoring, renormalize, bias)


def route_bwd(dweights, logits, indices, scoring, renormalize, bias):
    # `bias` only moves the selection, which `indices` already records.
    return moe.route_bwd(dweights, logits, indices, scoring, renormalize)


def moe_experts_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                    activation, alpha, limit):
    return moe.experts_fwd(x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                           activation, alpha, limit)


def moe_experts_bwd(dy, x, indices, weights, gate_up_proj, down_proj, gate_up_bias, down_bias,
                    activation, alpha, limit):
    return moe.experts_bwd(dy, x, indices, weights, gate_up_proj, down_proj, gate_up_bias,
                           down_bias, activation, alpha, limit)


def moe_experts_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks,
                      down_scales, gate_up_bias, down_bias, activation, alpha, limit):
    return moe.experts_mxfp4(x, indices, weights, gate_up_blocks, gate_up_scales, down_blocks,
                             down_scales, gate_up_bias, down_bias, activation, alpha, limit)


_registry.define("triton_", {"route": route, "route_bwd": route_bwd,
                             "moe_experts_fwd": moe_experts_fwd,
                             "moe_experts_bwd": moe_experts_bwd,
                             "moe_experts_mxfp4": moe_experts_mxfp4},
                 dispatch_keys=("CUDA", "CPU"))
