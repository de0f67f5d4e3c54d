"""A transformers LlamaForCausalLM as a GGUF file for llama.cpp, at F32 / BF16 / Q8_0 / Q4_0, so
llama-cpp-python decodes the very weights the other rows of bench_quant.py decode.

The tensor names and the q/k row permutation are gptcore's exporter's (gptcore/export/gguf_file.py:
llama.cpp's "llama" rope pairs interleaved rows, transformers' pairs the two halves, as llama.cpp's
own convert_hf_to_gguf.py permutes them). The quantised formats come from the `gguf` package's
gguf.quants, the Python port of ggml's own Q8_0 / Q4_0 / BF16 rounding that convert_hf_to_gguf.py
uses; every 2-D weight (embedding and LM head included) is in the chosen format and the norms stay
F32, so the bytes a token reads match gptcore.quantize over every linear layer. No vocabulary
(tokenizer model "none"): the benchmark feeds token ids."""
import numpy as np

from gptcore.export.gguf_file import interleave_rope_rows

FORMATS = ("F32", "BF16", "Q8_0", "Q4_0")


def _tensors(model):
    """{llama.cpp tensor name: float32 array (out, in)} of a transformers Llama."""
    c = model.config
    sd = {k: v.detach().float().contiguous().numpy() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["model.embed_tokens.weight"],
           "output_norm.weight": sd["model.norm.weight"],
           "output.weight": sd["lm_head.weight"]}
    for i in range(c.num_hidden_layers):
        h, p = f"model.layers.{i}.", f"blk.{i}."
        out.update({
            p + "attn_norm.weight": sd[h + "input_layernorm.weight"],
            p + "ffn_norm.weight": sd[h + "post_attention_layernorm.weight"],
            p + "attn_q.weight": interleave_rope_rows(sd[h + "self_attn.q_proj.weight"],
                                                      c.num_attention_heads),
            p + "attn_k.weight": interleave_rope_rows(sd[h + "self_attn.k_proj.weight"],
                                                      c.num_key_value_heads),
            p + "attn_v.weight": sd[h + "self_attn.v_proj.weight"],
            p + "attn_output.weight": sd[h + "self_attn.o_proj.weight"],
            p + "ffn_gate.weight": sd[h + "mlp.gate_proj.weight"],
            p + "ffn_up.weight": sd[h + "mlp.up_proj.weight"],
            p + "ffn_down.weight": sd[h + "mlp.down_proj.weight"]})
    return out


def llama_to_gguf(model, path, fmt="F32"):
    """Writes the transformers Llama `model` to `path` with its 2-D weights in `fmt` (FORMATS)."""
    import gguf
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
    c = model.config
    qtype = gguf.GGMLQuantizationType[fmt]
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = getattr(c, "rope_parameters", None) or {}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("bench-llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, "ALL_F32" if fmt == "F32" else
                                 f"MOSTLY_{fmt}"))
    writer.add_tokenizer_model("none")
    for name, array in _tensors(model).items():
        if array.ndim == 2 and fmt != "F32":
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(array, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
