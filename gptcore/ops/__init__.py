"""gptcore's functional API: validation, backend dispatch and autograd for every op."""
from gptcore.ops.attention import attention, attention_varlen
from gptcore.ops.backend import available_backends, backend
from gptcore.ops.moe import load_balancing_loss, moe, moe_experts, route, router_z_loss
from gptcore.ops.mxfp4 import MXFP4Tensor, mxfp4_dequantize, mxfp4_quantize
from gptcore.ops.sdpa import scaled_dot_product_attention, sdpa_override

__all__ = ["attention", "attention_varlen", "available_backends", "backend",
           "load_balancing_loss", "moe", "moe_experts", "route", "router_z_loss", "MXFP4Tensor",
           "mxfp4_dequantize", "mxfp4_quantize", "scaled_dot_product_attention", "sdpa_override"]
