"""Integrations with other libraries. Nothing here runs at `import gptcore`: transformers learns
the names "gptcore" (attn_implementation, experts_implementation) when `register_transformers()`
or `patch(model)` is called, and gptcore never imports transformers itself until then (it would
slow `import gptcore` down: docs/cpu-isa.md, "Measurements behind the code")."""
from gptcore.integrations.hf import patch, register as register_transformers, unpatch

__all__ = ["patch", "register_transformers", "unpatch"]
