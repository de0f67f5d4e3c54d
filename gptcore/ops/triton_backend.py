"""The Triton backend: importing this module defines every `triton_` op (see _registry.py);
gptcore/ops/backend.py imports it the first time the Triton backend is needed."""
from gptcore.ops import triton_attention, triton_moe  # noqa: F401  (each defines its ops)
