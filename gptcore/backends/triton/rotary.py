"""The Triton rotary kernel (kernels/rotary.py) as the `triton_` ops rotary_fwd and rotary_bwd
(specs in gptcore/ops/rotary.py, whose checks run before these)."""
from gptcore.backends.triton.kernels import rotary
from gptcore.ops.spec import define

define("triton_", {"rotary_fwd": rotary.forward, "rotary_bwd": rotary.backward},
       dispatch_keys=("CUDA", "CPU"))
