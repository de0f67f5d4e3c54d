"""The Triton MoE kernels (kernels/moe.py) as the `triton_` ops route, route_bwd, moe_experts_fwd,
moe_experts_bwd and moe_experts_mxfp4 (specs in gptcore/ops/route.py and moe_experts.py, whose
checks run before these). CPU tensors run only under TRITON_INTERPRET=1."""
from gptcore.backends.triton.kernels import moe
from gptcore.ops.spec import define


def route_bwd(dweights, logits, indices, scoring, renormalize, bias):
    # `bias` only moves the selection, which `indices` already records.
    return moe.route_bwd(dweights, logits, indices, scoring, renormalize)


define("triton_", {"route": moe.route, "route_bwd": route_bwd,
                   "moe_experts_fwd": moe.experts_fwd, "moe_experts_bwd": moe.experts_bwd,
                   "moe_experts_mxfp4": moe.experts_mxfp4},
       dispatch_keys=("CUDA", "CPU"))
