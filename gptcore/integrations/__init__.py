"""Integrations with other libraries. Nothing here runs at `import gptcore`: transformers learns
the names "gptcore" (attn_implementation, experts_implementation) when `register_transformers()`
or `patch(model)` is called, and gptcore never imports transformers itself until then (it would
slow `import gptcore` down: docs/cpu-isa.md, "Measurements behind the code")."""
from gptcore.integrations import hf
from gptcore.integrations.hf import patch, register as register_transformers
from gptcore.model.quantize import is_quantized, restore


def unpatch(model):
    """Undoes gptcore.quantize and gptcore.patch, whichever were applied to `model`: the
    original linear layers and attention / experts implementations come back. Returns the model."""
    patched = hasattr(model, "_gptcore_unpatched")
    if not patched and not is_quantized(model):
        raise ValueError(f"model: expected a model switched by gptcore.patch or gptcore.quantize, "
                         f"got a {type(model).__name__} that was neither")
    if is_quantized(model):
        restore(model)
    return hf.unpatch(model) if patched else model


__all__ = ["patch", "register_transformers", "unpatch"]
