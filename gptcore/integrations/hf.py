"""Hugging Face transformers integration: attn_implementation="gptcore" and
experts_implementation="gptcore", and gptcore.patch(model) for models already built (which also
switches their RMSNorm layers: hf_norms.py).

transformers calls our attention with q (B, H, Sq, D) and un-repeated k, v (B, Hkv, Sk, D),
and with the flash-attention style mask: None when nothing is padded, else the 2D (B, Sk)
padding mask, which we turn into packed sequences for gptcore.attention_varlen.
"""
import torch

import gptcore
from gptcore.integrations import hf_loss, hf_norms
from gptcore.ops import packing

NAME = "gptcore"


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      sliding_window=None, softcap=None, s_aux=None, **kwargs):
    """transformers' attention interface -> (attn_output (B, Sq, H, D), None)."""
    if dropout and module.training:
        raise ValueError(f"dropout: gptcore attention has no attention dropout, got {dropout} "
                         "in training mode; set the config's attention_dropout to 0")
    options = dict(causal=getattr(module, "is_causal", True), scale=scaling,
                   window=sliding_window, sinks=s_aux, softcap=softcap)
    if attention_mask is None:
        out = gptcore.attention(query, key, value, **options)             # (B, H, Sq, D)
        return out.transpose(1, 2).contiguous(), None
    if attention_mask.dim() != 2:
        raise ValueError("attention_mask: expected None or a 2D (B, Sk) padding mask (the "
                         f"flash-attention mask format), got shape {tuple(attention_mask.shape)}")
    return _padded_attention(query, key, value, attention_mask.bool(), options), None


def _padded_attention(query, key, value, mask, options):
    """Drops padded positions, packs the rest as varlen sequences, and scatters back."""
    B, H, Sq, D = query.shape
    Sk = key.shape[2]
    keep_k = mask[:, -Sk:]                                   # (B, Sk)
    keep_q = keep_k[:, -Sq:]                                 # queries are the last Sq positions
    (cu_q, max_q), (cu_k, max_k) = packing.unpad(keep_q), packing.unpad(keep_k)
    q = query.transpose(1, 2)[keep_q]                        # (Tq, H, D)
    k = key.transpose(1, 2)[keep_k]                          # (Tk, Hkv, D)
    v = value.transpose(1, 2)[keep_k]
    packed = gptcore.attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, **options)
    return packing.repad(packed, keep_q)                     # (B, Sq, H, D)


def _activation(experts):
    """The gptcore activation and its parameters for a transformers experts module."""
    if not getattr(experts, "is_concatenated", True):
        return {"activation": "gpt_oss", "alpha": float(experts.alpha),
                "limit": float(experts.limit)}
    act = experts.config.hidden_act
    if act in ("silu", "swish"):
        return {"activation": "silu"}
    if act in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
        return {"activation": "gelu"}
    raise ValueError(f"hidden_act: gptcore experts support silu and tanh-approximated gelu "
                     f"(or gpt-oss's interleaved gate), got {act!r}")


def experts_forward(experts, hidden_states, top_k_index, top_k_weights):
    """transformers' experts interface: (T, H), (T, k), (T, k) -> (T, H)."""
    gate_up, down = experts.gate_up_proj, experts.down_proj
    if getattr(experts, "is_transposed", False):
        # (E, H, 2I), (E, I, H) storage seen as (E, 2I, H), (E, H, I): the kernels read these
        # K-major views in place (no per-call copy; see csrc/moe/moe_experts_kmajor.cpp).
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    biases = {}
    if getattr(experts, "has_bias", False):
        biases = {"gate_up_bias": experts.gate_up_proj_bias, "down_bias": experts.down_proj_bias}
    E = gate_up.shape[0]
    # transformers marks "no expert" with index E (expert parallelism); gptcore uses -1.
    indices = torch.where(top_k_index >= E, -1, top_k_index)
    return gptcore.moe_experts(hidden_states, indices, top_k_weights, gate_up, down,
                               **biases, **_activation(experts))


def register():
    """Makes "gptcore" a valid attn_implementation and experts_implementation in transformers
    (gptcore.register_transformers; gptcore.patch calls it too)."""
    try:
        from transformers import AttentionInterface, AttentionMaskInterface
    except ImportError as err:
        raise ImportError("gptcore.register_transformers: transformers is not installed "
                          "(pip install 'gptcore[hf]')") from err
    from transformers.integrations.moe import ExpertsInterface
    from transformers.masking_utils import flash_attention_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    ExpertsInterface.register(NAME, experts_forward)


def _check_supported(model):
    """Refuses, at patch time, options gptcore cannot compute (named, with the fix)."""
    dropout = float(getattr(model.config, "attention_dropout", 0.0) or 0.0)
    if dropout > 0.0:
        raise ValueError(f"attention_dropout: gptcore attention has no dropout, got {dropout} "
                         "in the model's config; set config.attention_dropout = 0.0")
    for name, module in model.named_modules():
        if hasattr(module, "gate_up_proj") and hasattr(module, "config"):
            try:
                _activation(module)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None


def patch(model, *, attention=True, experts=True, norms=True, loss=False):
    """Switches an existing transformers model to gptcore in place: its attention, its experts
    (if it has any) and its RMSNorm layers (hf_norms.py), each of which can be left out; with
    loss=True also the LM head + loss of a dense causal LM (hf_loss.py: no logits returned when
    labels are given). Returns the model; gptcore.unpatch(model) switches it back."""
    if not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"model: expected a transformers PreTrainedModel, got {type(model).__name__}")
    _check_supported(model)
    if loss:
        hf_loss.check(model)
    register()
    previous = {}
    if experts and hasattr(model, "set_experts_implementation") and any(
            hasattr(m, "gate_up_proj") for m in model.modules()):
        previous["experts"] = model.config._experts_implementation
        model.set_experts_implementation(NAME)
    if attention:
        previous["attn"] = model.config._attn_implementation
        model.set_attn_implementation(NAME)
    if norms:
        previous["norms"] = hf_norms.install(model)
    if loss:
        hf_loss.install(model)
    first = getattr(model, "_gptcore_unpatched", {})    # patching twice keeps the first originals
    model._gptcore_unpatched = {**previous, **first,
                                "norms": first.get("norms", []) + previous.get("norms", [])}
    return model


def unpatch(model):
    """Restores what `patch` replaced. Returns the model."""
    previous = getattr(model, "_gptcore_unpatched", None)
    if previous is None:
        raise ValueError(f"model: expected a model switched by gptcore.patch, got a "
                         f"{type(model).__name__} that was not patched")
    if "attn" in previous:
        model.set_attn_implementation(previous["attn"])
    if "experts" in previous:
        model.set_experts_implementation(previous["experts"])
    hf_norms.restore(previous.get("norms", ()))
    hf_loss.restore(model)
    del model._gptcore_unpatched
    return model
