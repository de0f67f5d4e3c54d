"""The reference backend: the `ref_` ops, served by gptcore.ref (see ops.py)."""
from gptcore.backends.ref import ops  # noqa: F401  (defines the ref_ ops)
