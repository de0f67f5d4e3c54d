"""gptcore.quantize: every nn.Linear of a model (a transformers model or a gptcore.GPT) swapped in
place for a QuantizedLinear in a weight-only format; gptcore.unpatch swaps the originals back;
save_quantized / load_quantized keep a quantised model's state as safetensors."""
import fnmatch
import json

import torch
from torch import nn

from gptcore.nn.quantized_linear import QuantizedLinear
from gptcore.ops import validate
from gptcore.ops.quantized_linear import FORMATS

_ORIGINALS = "_gptcore_quantized"      # model attribute: {module name: the nn.Linear it replaced}


def _skipped(name, skip):
    """A module is skipped when a pattern matches its full name or its last component(s)
    ("lm_head" matches "lm_head" and "model.lm_head"; "*.mlp.*" matches by fnmatch)."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, "*." + p) for p in skip)


def quantize(model, weights="int8", skip=("lm_head",), *, group_size=None, head=None,
             keep_original=True):
    """Swaps every nn.Linear of `model` whose name `skip` does not match for a QuantizedLinear
    holding its weight in `weights` ("bf16" | "int8" | "int4" | "mxfp4"; group_size as in
    gptcore.quantize_weight). `head`: a format for the modules `skip` names (the LM head), None
    to leave them as they are. Embeddings stay as they are (a lookup reads T rows, not all).
    keep_original=False drops the original layers (memory back; unpatch then cannot undo).
    Returns the model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    validate.choice("weights", weights, FORMATS)
    if head is not None:
        validate.choice("head", head, FORMATS)
    if isinstance(skip, str) or not all(isinstance(p, str) for p in skip):
        raise TypeError(f"skip: expected a tuple of module name patterns, got {skip!r}")
    if hasattr(model, _ORIGINALS):
        raise ValueError("model: expected a model not quantised yet, got one that "
                         "gptcore.quantize already changed (gptcore.unpatch it first)")
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is nn.Linear]
    originals = {}
    for name, linear in targets:
        fmt = head if _skipped(name, skip) else weights
        if fmt is None:
            continue
        group = group_size if fmt in ("int8", "int4") else None
        _set(model, name, QuantizedLinear.from_linear(linear, fmt, group))
        originals[name] = linear if keep_original else None
    setattr(model, _ORIGINALS, originals)
    return model


def restore(model):
    """Puts back the nn.Linear layers quantize replaced. Returns the model."""
    originals = getattr(model, _ORIGINALS)
    if any(linear is None for linear in originals.values()):
        raise ValueError("model: quantised with keep_original=False, its original layers are "
                         "gone; load the model again instead")
    for name, linear in originals.items():
        _set(model, name, linear)
    delattr(model, _ORIGINALS)
    return model


def is_quantized(model):
    return hasattr(model, _ORIGINALS)


def layout(model):
    """{module name: [format, group_size]} of the QuantizedLinear layers in `model`."""
    return {name: [m.format, m.group_size] for name, m in model.named_modules()
            if isinstance(m, QuantizedLinear)}


def save_quantized(model, path):
    """Writes `model`'s state (quantised layers in their stored form) to a safetensors file,
    with the layer layout in its metadata."""
    from safetensors.torch import save_model
    save_model(model, str(path), metadata={"gptcore_quantized": json.dumps(layout(model))})


def load_quantized(model, path):
    """Loads a file of save_quantized into `model`, a freshly built (unquantised) model of the
    same architecture: its layers are first given the saved layout. Returns the model."""
    from safetensors import safe_open
    from safetensors.torch import load_model
    with safe_open(str(path), "pt") as f:
        saved = json.loads((f.metadata() or {}).get("gptcore_quantized", "null"))
    if saved is None:
        raise ValueError(f"path: expected a file written by gptcore.save_quantized, got {path} "
                         "(no gptcore_quantized metadata)")
    modules = dict(model.named_modules())
    missing = [name for name in saved if type(modules.get(name)) is not nn.Linear]
    if missing:
        raise ValueError(f"model: expected nn.Linear layers named {missing[:3]} as in {path}, "
                         "found none")
    originals = {}
    for name, (fmt, group) in saved.items():
        linear = modules[name]
        _set(model, name, QuantizedLinear(linear.in_features, linear.out_features, fmt, group,
                                          bias=linear.bias is not None,
                                          device=linear.weight.device))
        originals[name] = None
    setattr(model, _ORIGINALS, originals)
    load_model(model, str(path))
    return model


def _set(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
