"""The model API: GPTConfig (presets), GPT (the model) and sampling/generation."""
from gptcore.model.config import GPTConfig
from gptcore.model.gpt import GPT

__all__ = ["GPT", "GPTConfig"]
