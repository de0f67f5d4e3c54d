"""nn.Module building blocks over gptcore's functional API."""
from gptcore.nn.attention import Attention, KVCache, rotary

__all__ = ["Attention", "KVCache", "rotary"]
