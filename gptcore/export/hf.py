"""A gptcore GPT as a transformers model: a RoPE / RMSNorm / SwiGLU GPT is a Llama, its MoE
twin (softmax routing, top-k renormalised, SiLU GLU experts) a Mixtral. The weights map one to
one (gptcore's fused kv_proj and fc1 are split); whatever either family cannot compute is
refused by name, never approximated."""
from pathlib import Path

import torch

from gptcore.training import atomic

# (field, value gptcore must have, why): what Llama and Mixtral compute
REQUIRED = [("pos", "rope", "learned position tables have no Llama/Mixtral counterpart (GPT-2 "
             "has them but LayerNorm and a GELU MLP, not RMSNorm/SwiGLU)"),
            ("causal", True, "a bidirectional model is no causal LM"),
            ("windows", (), "sliding windows per layer"),
            ("sinks", False, "attention sinks"),
            ("embed_norm", False, "a norm after the embedding"),
            ("final_norm", True, "no final norm"),
            ("bias", False, "projection biases")]


def check_exportable(config, argument="--ckpt"):
    """ValueError naming the first field of GPTConfig `config` that transformers' Llama (dense)
    or Mixtral (MoE) cannot express."""
    for field, wanted, why in REQUIRED:
        if getattr(config, field) != wanted:
            raise ValueError(f"{argument}: expected a model Llama/Mixtral computes ({field}="
                             f"{wanted!r}), got {field}={getattr(config, field)!r}: {why}")
    if config.n_experts == 0 and config.mlp != "swiglu":
        raise ValueError(f"{argument}: expected mlp='swiglu' (Llama's MLP), got "
                         f"mlp={config.mlp!r}")
    if config.n_experts and (config.moe_scoring, config.moe_activation) != ("softmax", "silu"):
        raise ValueError(f"{argument}: expected moe_scoring='softmax' and moe_activation='silu' "
                         f"(Mixtral's router and experts), got {config.moe_scoring!r} and "
                         f"{config.moe_activation!r}")


def hf_config(config, bos=None):
    """The transformers LlamaConfig or MixtralConfig of GPTConfig `config`."""
    from transformers import LlamaConfig, MixtralConfig
    head_dim = config.head_dim or config.d_model // config.n_head
    common = dict(vocab_size=config.vocab_size, hidden_size=config.d_model,
                  intermediate_size=config.d_ff or 4 * config.d_model,
                  num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                  num_key_value_heads=config.n_kv_head or config.n_head, head_dim=head_dim,
                  max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps,
                  rope_theta=config.rope_theta, tie_word_embeddings=config.tie_embeddings,
                  hidden_act="silu", attention_dropout=0.0, initializer_range=config.init_std,
                  bos_token_id=bos, eos_token_id=bos, pad_token_id=None)
    if config.n_experts:
        return MixtralConfig(**common, num_local_experts=config.n_experts,
                             num_experts_per_tok=config.top_k, sliding_window=None,
                             router_aux_loss_coef=config.moe_aux_coef)
    return LlamaConfig(**common, attention_bias=False, mlp_bias=False)


def hf_state_dict(model):
    """gptcore GPT weights under transformers' Llama/Mixtral names (fp32 copies)."""
    c = model.config
    kv_width = (c.n_kv_head or c.n_head) * (c.head_dim or c.d_model // c.n_head)
    ones = torch.ones(c.d_model)                 # norm_gain=False: a gain of one

    def gain(norm):
        return norm.weight.detach() if norm.weight is not None else ones
    out = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight":
           gain(model.final_norm), "lm_head.weight": model.lm_head.weight}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        k, v = block.attn.kv_proj.weight.split(kv_width)     # kv_proj rows: all k, then all v
        out.update({p + "input_layernorm.weight": gain(block.attn_norm),
                    p + "post_attention_layernorm.weight": gain(block.ffn_norm),
                    p + "self_attn.q_proj.weight": block.attn.q_proj.weight,
                    p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
                    p + "self_attn.o_proj.weight": block.attn.o_proj.weight})
        if c.n_experts:
            out.update({p + "mlp.gate.weight": block.ffn.router.weight,
                        p + "mlp.experts.gate_up_proj": block.ffn.gate_up_proj,
                        p + "mlp.experts.down_proj": block.ffn.down_proj})
        else:
            gate, up = block.ffn.fc1.weight.chunk(2)            # fc1 rows: gate, then up
            out.update({p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                        p + "mlp.down_proj.weight": block.ffn.fc2.weight})
    return {name: t.detach().float().clone() for name, t in out.items()}   # no shared storage


def hf_tokenizer(tok):
    """A transformers fast tokenizer giving the same ids as gptcore tokenizer `tok`: the BPE's
    own `tokenizers` object, or for characters a word-level vocabulary over single
    characters (every character its own piece, pieces fused back on decoding)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from gptcore.training.data import BOS_TEXT, BPETokenizer
    if isinstance(tok, BPETokenizer):
        inner = tok.tokenizer
    else:
        inner = Tokenizer(models.WordLevel({**tok.index, BOS_TEXT: tok.bos}, unk_token=None))
        inner.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        inner.decoder = decoders.Fuse()
        inner.add_special_tokens([BOS_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=inner, bos_token=BOS_TEXT)


def to_hf(model, out_dir, tokenizer=None, argument="--ckpt"):
    """Writes `model` (a gptcore GPT) as a transformers model directory (config.json,
    model.safetensors, generation_config.json, and with `tokenizer` (a gptcore tokenizer) its
    transformers twin) at out_dir, atomically (a staging directory, then one rename; out_dir
    must not exist). Returns out_dir."""
    from transformers import AutoModelForCausalLM
    check_exportable(model.config, argument)
    hf_cfg = hf_config(model.config, None if tokenizer is None else tokenizer.bos)
    with torch.device("meta"):
        hf_model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    hf_model.load_state_dict(hf_state_dict(model), strict=True, assign=True)
    if model.config.tie_embeddings:
        hf_model.tie_weights()
    out_dir = Path(out_dir)
    tmp = atomic.stage(out_dir.parent, out_dir.name)
    hf_model.save_pretrained(tmp)
    if tokenizer is not None:
        hf_tokenizer(tokenizer).save_pretrained(tmp)
    atomic.commit(tmp, out_dir)
    return out_dir
