"""Projector: maps an encoder's outputs to the text model's width (LLaVA's "mm_projector")."""
import math

import torch
from torch import nn

KINDS = ("linear", "mlp2x_gelu")


class CellLinear(nn.Module):
    """x (n * cells, d_in), each input's tokens in a row of `cells` places (a pooled grid,
    row-major) -> (n * cells, d_out): a Linear with its own weights at each place. A shared map
    treats every place alike, so a mean over an input's tokens forgets which place held what;
    with a map per place, the sum of the tokens still says it."""

    def __init__(self, cells, d_in, d_out):
        super().__init__()
        bound = 1 / math.sqrt(d_in)                                    # nn.Linear's init
        self.weight = nn.Parameter(torch.empty(cells, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(cells, d_out).uniform_(-bound, bound))
        self.cells = cells

    def forward(self, x):
        if x.shape[0] % self.cells:
            raise ValueError(f"x: expected rows in groups of cells={self.cells}, got {x.shape[0]}")
        x = x.reshape(-1, self.cells, x.shape[-1])                      # (n, cells, d_in)
        y = torch.einsum("npi,pio->npo", x, self.weight) + self.bias    # (n, cells, d_out)
        return y.flatten(0, 1)


class Projector(nn.Module):
    """x (..., d_in) -> (..., d_model). "linear": one Linear (LLaVA-1); "mlp2x_gelu":
    Linear -> GELU -> Linear, both to d_model (LLaVA-1.5). cells > 1: x is (n * cells, d_in),
    the pooled grid of n inputs, and the first Linear is a CellLinear."""

    def __init__(self, kind, d_in, d_model, cells=1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        self.kind = kind
        first = CellLinear(cells, d_in, d_model) if cells > 1 else nn.Linear(d_in, d_model)
        if kind == "linear":
            self.net = first
        else:
            self.net = nn.Sequential(first, nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x):
        return self.net(x)

    def extra_repr(self):
        return repr(self.kind)
