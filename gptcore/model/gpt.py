"""gptcore.GPT: a GPT built from gptcore.nn modules over gptcore's functional API.

One class covers Karpathy's microgpt exactly (GPTConfig.preset("microgpt")), dense and MoE
GPTs with RoPE, and gpt-oss-style models with windows and sinks. The forward pass is the
whole algorithm: embed, (norm), blocks of attention and feed-forward, (norm), LM head."""
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.config import GPTConfig
from gptcore.nn import MLP, Attention, Block, MoE, RMSNorm, packed_positions
from gptcore.ops import packing
from gptcore.ops.losses import linear_cross_entropy


def _microgpt_tensor(value):
    return torch.as_tensor(value, dtype=torch.float32)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config: expected a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = nn.Embedding(c.block_size, c.d_model) if c.pos == "learned" else None
        self.embed_norm = self._norm() if c.embed_norm else None
        self.blocks = nn.ModuleList(self._block(i) for i in range(c.n_layer))
        self.final_norm = self._norm() if c.final_norm else None
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.reset_parameters()
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def _norm(self):
        return RMSNorm(self.config.d_model, eps=self.config.norm_eps, gain=self.config.norm_gain)

    def _block(self, layer):
        c = self.config
        d_ff = c.d_ff or 4 * c.d_model
        attn = Attention(c.d_model, c.n_head, c.n_kv_head, c.head_dim, causal=c.causal,
                         window=c.window(layer), sinks=c.sinks, bias=c.bias,
                         rope_theta=c.rope_theta if c.pos == "rope" else None)
        if c.n_experts:
            ffn = MoE(c.d_model, d_ff, c.n_experts, c.top_k, scoring=c.moe_scoring,
                      activation=c.moe_activation)
        else:
            ffn = MLP(c.d_model, d_ff, c.mlp, bias=c.bias)
        return Block(attn, ffn, self._norm(), self._norm())

    def reset_parameters(self):
        """Every weight matrix, table and expert bank ~ N(0, init_std); biases, sinks 0, gains 1."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif p.dim() >= 2:
                nn.init.normal_(p, std=self.config.init_std)
            else:
                nn.init.zeros_(p)

    # ---- the forward pass ------------------------------------------------------------------

    def _embed(self, idx, inputs_embeds, cu_seqlens, start=0):
        """Token (or given) embeddings plus learned positions; returns x and the positions."""
        c = self.config
        packed = cu_seqlens is not None
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("idx, inputs_embeds: expected exactly one of them, got "
                             f"{'both' if idx is not None else 'neither'}")
        if idx is not None:
            if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64:
                raise TypeError(f"idx: expected an int64 tensor, got "
                                f"{getattr(idx, 'dtype', type(idx).__name__)}")
            if idx.dim() != (1 if packed else 2):
                raise ValueError(f"idx: expected shape {'(T,) with cu_seqlens' if packed else '(B, T)'}"
                                 f", got {tuple(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c.vocab_size):
                raise ValueError(f"idx: expected token ids in [0, {c.vocab_size}), got "
                                 f"[{int(idx.min())}, {int(idx.max())}]")
            x = self.wte(idx)                                          # (B, T, d) or (T, d)
        else:
            if inputs_embeds.dim() != (2 if packed else 3) or inputs_embeds.shape[-1] != c.d_model:
                raise ValueError(f"inputs_embeds: expected shape "
                                 f"{'(T, d_model)' if packed else '(B, T, d_model)'} with "
                                 f"d_model={c.d_model}, got {tuple(inputs_embeds.shape)}")
            x = inputs_embeds
        T = x.shape[-2]
        if packed:
            positions = packed_positions(cu_seqlens, T)                # (T,) restarting at 0
        else:
            positions = torch.arange(start, start + T, device=x.device)
        if self.wpe is not None:
            last = int(positions.max()) if positions.numel() else -1
            if last >= c.block_size:
                raise ValueError(f"idx: learned positions stop at block_size={c.block_size}, got "
                                 f"a sequence of length {last + 1}")
            x = x + self.wpe(positions)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return x, positions

    def _trunk(self, x, positions, caches=None, cu_seqlens=None, max_seqlen=None):
        kwargs = {"positions": positions}
        if cu_seqlens is not None:
            if max_seqlen is None:
                max_seqlen = packing.max_seqlen(cu_seqlens)
            kwargs.update(cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i], **kwargs)
        return x if self.final_norm is None else self.final_norm(x)

    def hidden_states(self, idx=None, *, inputs_embeds=None, cu_seqlens=None, max_seqlen=None):
        """Final hidden states before the LM head (after the final norm, if any):
        (B, T, d_model), or (T, d_model) packed."""
        x, positions = self._embed(idx, inputs_embeds, cu_seqlens)
        return self._trunk(x, positions, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)

    def forward(self, idx=None, targets=None, *, inputs_embeds=None, cu_seqlens=None,
                max_seqlen=None, return_logits=True):
        """idx (B, T) int64 -> (logits (B, T, vocab), loss or None).

        loss: mean next-token cross-entropy over targets (same shape as idx) != -1.
        return_logits=False (with targets): the loss through gptcore.linear_cross_entropy, the
        LM head and the loss chunk by chunk, never forming the (tokens, vocab) logits, which
        are then None; a quantized head keeps the plain path.
        inputs_embeds (B, T, d_model) replaces the token embeddings (positions are still
        added or rotated). Packed: cu_seqlens int32 (N+1,), idx (T,) (or inputs_embeds (T, d))
        holds N sequences, positions restart in each; logits (T, vocab)."""
        h = self.hidden_states(idx, inputs_embeds=inputs_embeds, cu_seqlens=cu_seqlens,
                               max_seqlen=max_seqlen)
        if targets is None:
            return self.lm_head(h), None
        if targets.shape != h.shape[:-1]:
            raise ValueError(f"targets: expected shape {tuple(h.shape[:-1])}, got "
                             f"{tuple(targets.shape)}")
        head = self.lm_head
        if return_logits or not isinstance(head, nn.Linear) or head.bias is not None:
            logits = head(h)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-1)
            return logits, loss
        return None, linear_cross_entropy(h, head.weight.to(h.dtype), targets, ignore_index=-1)

    def aux_loss(self):
        """moe_aux_coef * the load-balancing losses of the last forward's MoE layers (0 if dense)."""
        losses = [b.ffn.aux["load_balancing_loss"] for b in self.blocks
                  if isinstance(b.ffn, MoE) and b.ffn.aux]
        return self.config.moe_aux_coef * sum(losses) if losses else 0.0

    def num_params(self, active=False):
        """Parameters (tied ones once); active=True: what one token uses (top_k experts of each MoE)."""
        total = sum(p.numel() for p in self.parameters())
        if active:
            total -= sum(b.ffn.total_params - b.ffn.active_params for b in self.blocks
                         if isinstance(b.ffn, MoE))
        return total

    # ---- generation ------------------------------------------------------------------------

    def make_caches(self, batch, max_len, *, dtype=None, device=None):
        """One preallocated KVCache per layer (a ring of the window for window layers)."""
        dtype = dtype or self.wte.weight.dtype
        device = device or self.wte.weight.device
        return [b.attn.make_cache(batch, max_len, dtype=dtype, device=device) for b in self.blocks]

    def decode(self, idx, caches):
        """Logits (B, T, vocab) of idx (B, T), the tokens following those in `caches`."""
        x, positions = self._embed(idx, None, None, start=caches[0].length)
        return self.lm_head(self._trunk(x, positions, caches))

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 use_cache=True, stop_token=None, generator=None):
        """idx (B, T) int64 -> (B, T + n) with n <= max_new_tokens new tokens (fewer when every
        row has produced stop_token; rows that stopped are padded with it). temperature=0:
        greedy. use_cache=False recomputes the whole prefix each step."""
        from gptcore.model.sampling import generate
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, use_cache=use_cache, stop_token=stop_token,
                        generator=generator)

    def stream(self, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
               generator=None, exclude=()):
        """Yields new token ids one at a time after the ids `prompt` (one row); the text may
        outgrow block_size (the context then slides). See gptcore.model.sampling.stream."""
        from gptcore.model.sampling import stream
        return stream(self, prompt, max_new_tokens, temperature=temperature, top_k=top_k,
                      top_p=top_p, generator=generator, exclude=exclude)

    # ---- microgpt's own weights ------------------------------------------------------------

    @classmethod
    def from_microgpt(cls, state_dict):
        """A GPT computing microgpt's function with its weights. state_dict: microgpt's names
        ('wte', 'wpe', 'lm_head', 'layer{i}.attn_wq|attn_wk|attn_wv|attn_wo',
        'layer{i}.mlp_fc1|mlp_fc2'), each a nested list of floats or a tensor, (out, in)."""
        if not isinstance(state_dict, dict) or "wte" not in state_dict:
            raise ValueError("state_dict: expected microgpt's state dict with 'wte', 'wpe', "
                             f"'lm_head', 'layer{{i}}.*', got keys {list(state_dict)[:5]}")
        sd = {k: _microgpt_tensor(v) for k, v in state_dict.items()}
        n_layer = len({k.split(".")[0] for k in sd if k.startswith("layer")})
        names = ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")
        expected = {"wte", "wpe", "lm_head"} | {f"layer{i}.{n}" for i in range(n_layer)
                                                for n in names}
        if set(sd) != expected:
            raise ValueError(f"state_dict: expected microgpt's keys, missing "
                             f"{sorted(expected - set(sd))}, unexpected {sorted(set(sd) - expected)}")
        vocab, d = sd["wte"].shape
        config = GPTConfig.preset("microgpt", n_layer=n_layer, vocab_size=vocab, d_model=d,
                                  block_size=sd["wpe"].shape[0], d_ff=sd["layer0.mlp_fc1"].shape[0])
        model = cls(config)
        with torch.no_grad():
            model.wte.weight.copy_(sd["wte"])
            model.wpe.weight.copy_(sd["wpe"])
            model.lm_head.weight.copy_(sd["lm_head"])
            for i, block in enumerate(model.blocks):
                p = f"layer{i}."
                block.attn.q_proj.weight.copy_(sd[p + "attn_wq"])
                block.attn.kv_proj.weight.copy_(torch.cat((sd[p + "attn_wk"], sd[p + "attn_wv"])))
                block.attn.o_proj.weight.copy_(sd[p + "attn_wo"])
                block.ffn.fc1.weight.copy_(sd[p + "mlp_fc1"])
                block.ffn.fc2.weight.copy_(sd[p + "mlp_fc2"])
        return model

    def to_microgpt(self):
        """This model's weights under microgpt's names, as float32 tensors (out, in)."""
        c = self.config
        if c.pos != "learned" or c.n_experts or c.mlp != "relu" or c.final_norm or c.norm_gain:
            raise ValueError("to_microgpt: expected a model with microgpt's architecture "
                             "(GPTConfig.preset('microgpt', ...)), got a different config")
        sd = {"wte": self.wte.weight, "wpe": self.wpe.weight, "lm_head": self.lm_head.weight}
        for i, block in enumerate(self.blocks):
            wk, wv = block.attn.kv_proj.weight.chunk(2)
            sd.update({f"layer{i}.attn_wq": block.attn.q_proj.weight, f"layer{i}.attn_wk": wk,
                       f"layer{i}.attn_wv": wv, f"layer{i}.attn_wo": block.attn.o_proj.weight,
                       f"layer{i}.mlp_fc1": block.ffn.fc1.weight,
                       f"layer{i}.mlp_fc2": block.ffn.fc2.weight})
        return {k: v.detach().clone() for k, v in sd.items()}
