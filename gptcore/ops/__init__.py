"""gptcore's functional API: one module per op family, each holding its public functions and
the specs of its ops (gptcore/ops/spec.py); backend selection in backend.py."""
from gptcore.ops.activations import gated_activation, gelu
from gptcore.ops.attention import attention, attention_varlen
from gptcore.ops.backend import available_backends, backend
from gptcore.ops.losses import linear_cross_entropy
from gptcore.ops.moe_experts import moe, moe_experts
from gptcore.ops.mxfp4 import MXFP4Tensor, mxfp4_dequantize, mxfp4_quantize
from gptcore.ops.norms import rms_norm
from gptcore.ops.quantized_linear import QuantizedWeight, quantize_weight, quantized_linear
from gptcore.ops.rotary import rotary
from gptcore.ops.route import load_balancing_loss, route, router_z_loss
from gptcore.ops.sdpa import scaled_dot_product_attention, sdpa_override

__all__ = ["attention", "attention_varlen", "available_backends", "backend", "gated_activation",
           "gelu", "linear_cross_entropy", "load_balancing_loss", "moe", "moe_experts", "route",
           "router_z_loss",
           "MXFP4Tensor", "mxfp4_dequantize", "mxfp4_quantize", "QuantizedWeight",
           "quantize_weight", "quantized_linear", "rms_norm", "rotary", "scaled_dot_product_attention",
           "sdpa_override"]
