"""nn.Module building blocks over gptcore's functional API."""
from gptcore.nn.attention import Attention, KVCache, rotary
from gptcore.nn.moe import MoE

__all__ = ["Attention", "KVCache", "MoE", "rotary"]
