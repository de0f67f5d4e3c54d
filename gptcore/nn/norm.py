"""gptcore.nn.RMSNorm: root-mean-square normalisation, with or without a learned gain."""
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x (..., dim) -> x / sqrt(mean(x**2) + eps) [* gain]. `gain=False` is microgpt's norm,
    which learns nothing; `gain=True` is Llama's."""

    def __init__(self, dim, eps=1e-5, gain=True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if gain else None

    def forward(self, x):
        return F.rms_norm(x, (self.dim,), self.weight, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}, gain={self.weight is not None}"
