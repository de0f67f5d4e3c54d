"""A gptcore GPT as a GGUF file for llama.cpp (architecture "llama"; MoE models as llama with
experts, as llama.cpp reads Mixtral), written with the `gguf` package. The models export_hf
accepts are the ones written here. Tensor names are llama.cpp's; q and k rows are permuted
from the rotate-half RoPE layout (gptcore's and transformers') to the interleaved pairs that
llama.cpp's "llama" rope applies, as llama.cpp's own converter does. The tokenizer: llama.cpp
gets no vocabulary (tokenizer model "none": it runs on token ids); gptcore's tokenizer rides
along as JSON under "gptcore.tokenizer"."""
import json
import os
from pathlib import Path

import numpy as np

from gptcore.export.hf import check_exportable
from gptcore.training import atomic

ARCH = "llama"


def interleave_rope_rows(weight, n_heads):
    """(n_heads * D, in) rows of a q or k projection: within each head, rotate-half order
    (x_0..x_{D/2-1} paired with x_{D/2}..) -> interleaved pairs (x_0, x_1), (x_2, x_3), ..."""
    rows, cols = weight.shape
    d = rows // n_heads
    return (weight.reshape(n_heads, 2, d // 2, cols).swapaxes(1, 2).reshape(rows, cols))


def gguf_tensors(model):
    """{llama.cpp tensor name: float32 numpy array (out, in) as torch stores it}."""
    c = model.config
    n_kv = c.n_kv_head or c.n_head
    kv_width = n_kv * (c.head_dim or c.d_model // c.n_head)

    def np32(t):
        return t.detach().float().contiguous().numpy()

    def gain(norm):
        return np32(norm.weight) if norm.weight is not None else \
            np.ones(c.d_model, np.float32)
    out = {"token_embd.weight": np32(model.wte.weight),
           "output_norm.weight": gain(model.final_norm)}
    if not c.tie_embeddings:                      # llama.cpp reuses token_embd when absent
        out["output.weight"] = np32(model.lm_head.weight)
    for i, block in enumerate(model.blocks):
        p = f"blk.{i}."
        k, v = block.attn.kv_proj.weight.split(kv_width)
        out.update({p + "attn_norm.weight": gain(block.attn_norm),
                    p + "ffn_norm.weight": gain(block.ffn_norm),
                    p + "attn_q.weight": interleave_rope_rows(np32(block.attn.q_proj.weight),
                                                              c.n_head),
                    p + "attn_k.weight": interleave_rope_rows(np32(k), n_kv),
                    p + "attn_v.weight": np32(v),
                    p + "attn_output.weight": np32(block.attn.o_proj.weight)})
        if c.n_experts:
            gate, up = block.ffn.gate_up_proj.chunk(2, dim=1)       # (E, I, H) each
            out.update({p + "ffn_gate_inp.weight": np32(block.ffn.router.weight),
                        p + "ffn_gate_exps.weight": np32(gate),
                        p + "ffn_up_exps.weight": np32(up),
                        p + "ffn_down_exps.weight": np32(block.ffn.down_proj)})
        else:
            gate, up = block.ffn.fc1.weight.chunk(2)
            out.update({p + "ffn_gate.weight": np32(gate), p + "ffn_up.weight": np32(up),
                        p + "ffn_down.weight": np32(block.ffn.fc2.weight)})
    return out


def to_gguf(model, path, tokenizer=None, name="gptcore", argument="--ckpt"):
    """Writes `model` as a float32 GGUF file at `path` (atomically: a temporary file beside it,
    then a rename). tokenizer: gptcore's tokenizer dict, stored
    as JSON. Returns path."""
    import gguf
    check_exportable(model.config, argument)
    c = model.config
    head_dim = c.head_dim or c.d_model // c.n_head
    path = Path(path)
    tmp = path.with_name(atomic.TMP_PREFIX + path.name)     # renamed into place when complete
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_name(name)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.d_model)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(c.d_ff or 4 * c.d_model)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head or c.n_head)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if c.n_experts:
        writer.add_expert_count(c.n_experts)
        writer.add_expert_used_count(c.top_k)
    writer.add_tokenizer_model("none")
    if tokenizer is not None:
        writer.add_string("gptcore.tokenizer", json.dumps(tokenizer))
    for tensor_name, array in gguf_tensors(model).items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.rename(tmp, path)
    atomic.fsync_dir(path.parent)
    return path
