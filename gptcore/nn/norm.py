"""gptcore.nn.RMSNorm: root-mean-square normalisation, with or without a learned gain, and with
the residual add fused in when given one (gptcore.rms_norm)."""
import torch
from torch import nn

from gptcore.ops.norms import rms_norm


class RMSNorm(nn.Module):
    """x (..., dim) -> x / sqrt(mean(x**2) + eps) [* gain]. `gain=False` is microgpt's norm,
    which learns nothing; `gain=True` is Llama's.

    forward(x, residual=None): with a residual, h = x + residual is normalised and (y, h)
    returned: a pre-norm block's residual add and its next norm in one pass."""

    def __init__(self, dim, eps=1e-5, gain=True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if gain else None

    def forward(self, x, residual=None):
        return rms_norm(x, self.weight, self.eps, residual=residual)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}, gain={self.weight is not None}"
