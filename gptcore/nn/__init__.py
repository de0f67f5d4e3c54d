"""nn.Module building blocks over gptcore's functional API."""
from gptcore.nn.attention import Attention, packed_positions
from gptcore.nn.block import Block
from gptcore.nn.kv_cache import KVCache
from gptcore.nn.mlp import MLP
from gptcore.nn.moe import MoE
from gptcore.nn.norm import RMSNorm
from gptcore.nn.quantized_linear import QuantizedLinear

__all__ = ["Attention", "Block", "KVCache", "MLP", "MoE", "RMSNorm", "packed_positions"]
__all__ += ["QuantizedLinear"]
