"""The Triton backend: importing this module defines the `triton_` ops (gptcore/ops/backend.py
imports it the first time the Triton backend is needed). MoE ops join when their module exists."""
import importlib
import importlib.util

from gptcore.ops import triton_attention  # noqa: F401  (defines the attention ops)

if importlib.util.find_spec("gptcore.ops.triton_moe") is not None:
    importlib.import_module("gptcore.ops.triton_moe")
