"""The LM head and its loss in one op for transformers models (gptcore.patch's `loss`, opt-in).

With `labels`, a patched causal LM computes its loss with gptcore.linear_cross_entropy from the
last hidden states and lm_head's weight, so the (tokens, vocab) logits are never stored whole,
and returns `logits=None`: the reason to opt in is not to have them. Without labels, or with an
argument this path does not take (logits_to_keep, return_dict=False, positional arguments
beyond input_ids), the model's own forward runs. Dense families only: the MoE families add a
router loss that their own forward computes from the logits' pass."""
import torch
from torch.nn import functional as F

import gptcore

FAMILIES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
IGNORE = -100                                     # transformers' ForCausalLMLoss ignore_index


class LossForward:
    """A patched causal LM's forward: transformers' loss (mean over kept tokens, or the sum over
    num_items_in_batch under gradient accumulation) without the whole logits."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, labels=None, **kwargs):
        model = self.model
        if labels is None or len(args) > 1 or kwargs.get("logits_to_keep", 0) != 0 \
                or kwargs.get("return_dict") is False:
            return type(model).forward(model, *args, labels=labels, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast
        kwargs.pop("logits_to_keep", None)
        shift = kwargs.pop("shift_labels", None)
        outputs = model.model(*args, **kwargs)
        if shift is None:                                   # tokens < n predict token n
            shift = F.pad(labels, (0, 1), value=IGNORE)[..., 1:]
        hidden = outputs.last_hidden_state                  # (B, S, d)
        shift = shift.to(hidden.device)
        loss = gptcore.linear_cross_entropy(hidden, model.lm_head.weight, shift, IGNORE)
        total = kwargs.get("num_items_in_batch")
        if total is not None:                               # a sum over the accumulated batch
            loss = loss * (shift != IGNORE).sum() / torch.as_tensor(total, device=loss.device)
        return CausalLMOutputWithPast(loss=loss, logits=None, cache=outputs.cache,
                                      hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions)


def check(model):
    """Raises ValueError naming what `install` cannot take."""
    name = type(model).__name__
    if name not in FAMILIES:
        raise ValueError(f"loss: gptcore's LM head + loss covers {', '.join(FAMILIES)}, got {name}; "
                         "patch without loss=True")
    if model.lm_head.bias is not None:
        raise ValueError("loss: gptcore's LM head + loss has no bias, got an lm_head with one")


def install(model):
    """Patches `model` (checked by `check`); a patched model stays as it is."""
    if "forward" not in vars(model):
        model.forward = LossForward(model)


def restore(model):
    """Gives a model `install` patched its own forward back."""
    if isinstance(vars(model).get("forward"), LossForward):
        del model.forward
