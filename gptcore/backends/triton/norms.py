"""The Triton RMSNorm kernels (kernels/rms_norm.py) as the `triton_` ops rms_norm_fwd and
rms_norm_bwd (specs in gptcore/ops/norms.py, whose checks run before these)."""
from gptcore.backends.triton.kernels import rms_norm
from gptcore.ops.spec import define


def rms_norm_bwd(dy, dh, x, residual, h, weight, rstd, eps):
    return rms_norm.backward(dy, dh, x, residual, h, weight, rstd)


define("triton_", {"rms_norm_fwd": rms_norm.forward, "rms_norm_bwd": rms_norm_bwd},
       dispatch_keys=("CUDA", "CPU"))
