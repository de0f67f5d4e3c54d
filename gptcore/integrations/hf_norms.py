"""The RMSNorm layers of transformers models through gptcore.rms_norm (gptcore.patch's `norms`).

Each supported layer gets an instance `forward` (its class, parameters and state_dict are left
as they are) until `restore` removes it. Calls gptcore cannot compute as transformers does (a
float64 input, a device other than CPU / CUDA, a weight whose dtype the layer's product would
promote to) go to the layer's own forward."""
import torch

import gptcore
from gptcore.ops.validate import FLOAT_DTYPES

# How each family's RMSNorm applies its gain (transformers 5.x modeling code):
#   "cast_first"  weight * norm(x).to(x.dtype)               the product promotes to weight's dtype
#   "fp32"        (weight * norm(x)).to(x.dtype), in fp32     the output has x's dtype
#   "offset"      (norm(x) * (1 + weight)).to(x.dtype), fp32  Gemma's zero-centred gain
STYLES = {
    "LlamaRMSNorm": "cast_first", "MistralRMSNorm": "cast_first", "Qwen2RMSNorm": "cast_first",
    "Qwen3RMSNorm": "cast_first", "MixtralRMSNorm": "cast_first",
    "Qwen2MoeRMSNorm": "cast_first", "Qwen3MoeRMSNorm": "cast_first",
    "GptOssRMSNorm": "fp32", "Gemma2RMSNorm": "offset",
}


class NormForward:
    """A patched RMSNorm layer's forward: (..., d) -> (..., d), as the layer's own computes it
    up to fp32 rounding (bf16 / fp16 inputs are rounded once, at the end)."""

    def __init__(self, layer, style):
        self.layer, self.style = layer, style

    def __call__(self, hidden_states):
        layer = self.layer
        weight = layer.weight
        if not self._fits(hidden_states, weight):
            return type(layer).forward(layer, hidden_states)
        if self.style == "offset":
            return gptcore.rms_norm(hidden_states, 1.0 + weight.float(), layer.eps)
        return gptcore.rms_norm(hidden_states, weight, layer.variance_epsilon)

    def _fits(self, x, weight):
        if x.dtype not in FLOAT_DTYPES or x.device.type not in ("cpu", "cuda"):
            return False
        return self.style != "cast_first" or weight.dtype == x.dtype


def install(model):
    """Patches every supported RMSNorm layer of `model`; returns the layers patched."""
    layers = [m for m in model.modules()
              if STYLES.get(type(m).__name__) and "forward" not in vars(m)]
    for layer in layers:
        layer.forward = NormForward(layer, STYLES[type(layer).__name__])
    return layers


def restore(layers):
    """Gives the layers `install` patched their own forward back."""
    for layer in layers:
        if isinstance(vars(layer).get("forward"), NormForward):
            del layer.forward
