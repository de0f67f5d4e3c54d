"""Projector: maps an encoder's outputs to the text model's width (LLaVA's "mm_projector")."""
from torch import nn

KINDS = ("linear", "mlp2x_gelu")


class Projector(nn.Module):
    """x (..., d_in) -> (..., d_model). "linear": one Linear (LLaVA-1); "mlp2x_gelu":
    Linear -> GELU -> Linear, both to d_model (LLaVA-1.5)."""

    def __init__(self, kind, d_in, d_model):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "linear":
            self.net = nn.Linear(d_in, d_model)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x):
        return self.net(x)

    def extra_repr(self):
        return repr(self.kind)
