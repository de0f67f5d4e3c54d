"""The Triton backend: importing this module defines every `triton_` op (see _registry.py)."""
import gptcore.ops.triton_moe  # noqa: F401
