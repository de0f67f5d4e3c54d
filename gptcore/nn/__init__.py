"""nn.Module building blocks over gptcore's functional API."""
from gptcore.nn.moe import MoE

__all__ = ["MoE"]
