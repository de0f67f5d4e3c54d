"""The Triton backend: importing this module defines every `triton_` op (gptcore/ops/spec.py);
gptcore/ops/backend.py imports it the first time the Triton backend is needed."""
from gptcore.backends.triton import attention, moe, norms  # noqa: F401  (each defines its ops)
from gptcore.backends.triton import activations, losses, rotary  # noqa: F401
