"""gptcore: fused attention and Mixture-of-Experts kernels for GPT-style models in PyTorch.

The algorithm lives in gptcore.ref (plain PyTorch); the efficiency lives in the backends
(Triton for CUDA tensors, the C++ extension for CPU tensors), which compute the same function.
"""
from gptcore.ops import (MXFP4Tensor, attention, attention_varlen, available_backends, backend,
                         load_balancing_loss, moe, moe_experts, mxfp4_dequantize, mxfp4_quantize,
                         rms_norm, rotary, route, router_z_loss)
from gptcore.ops import scaled_dot_product_attention, sdpa_override
from gptcore.ops import gated_activation, gelu, linear_cross_entropy
from gptcore.ops import QuantizedWeight, quantize_weight, quantized_linear

from gptcore.model import GPT, GPTConfig
from gptcore.model.quantize import load_quantized, quantize, save_quantized

from gptcore.integrations import patch, register_transformers, unpatch

__version__ = "0.1.0"

__all__ = ["MXFP4Tensor", "attention", "attention_varlen", "available_backends", "backend",
           "load_balancing_loss", "moe", "moe_experts", "mxfp4_dequantize", "mxfp4_quantize",
           "patch", "rms_norm", "rotary", "route", "router_z_loss", "__version__"]
__all__ += ["GPT", "GPTConfig"]
__all__ += ["gated_activation", "gelu", "linear_cross_entropy"]
__all__ += ["load_quantized", "quantize", "save_quantized"]
__all__ += ["QuantizedWeight", "quantize_weight", "quantized_linear"]
__all__ += ["register_transformers", "scaled_dot_product_attention", "sdpa_override", "unpatch"]
