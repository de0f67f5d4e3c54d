"""The Triton activation kernels (kernels/activations.py) as the `triton_` ops gelu_fwd / _bwd
and gated_activation_fwd / _bwd (specs in gptcore/ops/activations.py, whose checks run first)."""
from gptcore.backends.triton.kernels import activations
from gptcore.ops.spec import define

define("triton_", {"gelu_fwd": activations.gelu_forward, "gelu_bwd": activations.gelu_backward,
                   "gated_activation_fwd": activations.gated_forward,
                   "gated_activation_bwd": activations.gated_backward},
       dispatch_keys=("CUDA", "CPU"))
