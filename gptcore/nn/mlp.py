"""gptcore.nn.MLP: the dense feed-forward layer of a transformer block (ReLU, GELU or SwiGLU),
its activations through gptcore's fused ops (gptcore.gelu, gptcore.gated_activation)."""
import torch.nn.functional as F
from torch import nn

from gptcore.ops.activations import gated_activation, gelu

ACTIVATIONS = ("relu", "gelu", "swiglu")


class MLP(nn.Module):
    """x (..., d_model) -> fc2(act(fc1(x))) (..., d_model).

    "relu" / "gelu": fc1 maps d_model -> d_ff. "swiglu": fc1 maps d_model -> 2 * d_ff, rows
    [0, d_ff) the gate and [d_ff, 2 d_ff) the up projection, h = silu(gate) * up (Llama)."""

    def __init__(self, d_model, d_ff, activation="relu", bias=False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        width = 2 * d_ff if activation == "swiglu" else d_ff
        self.fc1 = nn.Linear(d_model, width, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        h = self.fc1(x)                                             # (..., d_ff or 2 d_ff)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = gelu(h, approximate="tanh")
        else:
            h = gated_activation(h, "swiglu")                       # (..., d_ff)
        return self.fc2(h)
