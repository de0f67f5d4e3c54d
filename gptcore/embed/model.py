"""EmbeddingModel: the GPT trunk (bidirectional by default) -> pooling over each sequence's tokens
-> a projection head to d_embed. Batches are packed (no pad tokens) and run through
gptcore.attention_varlen; `embed` returns L2-normalised prefixes of the embedding."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.config import GPTConfig
from gptcore.training.data import CharTokenizer
from gptcore.embed.loss import check_dims, matryoshka_loss
from gptcore.embed.pooling import last_pool, mean_pool, pack, unpad
from gptcore.model import GPT


class EmbeddingModel(nn.Module):
    """A name (or any string the tokenizer takes) -> a d_embed vector whose first k dimensions,
    for each k in matryoshka_dims, are trained to work alone.

    config: a GPTConfig for the trunk (default: the "names" preset made bidirectional);
    causal trunks pool the last token (the only one that has seen the whole string), others
    the mean over tokens. head: "linear" (d_model -> d_embed) or "mlp" (Linear, GELU, Linear,
    as SimCLR's projection head: its output is not confined to a d_model-dim subspace).
    temperature: the InfoNCE temperature; learn_temperature=True makes it a parameter (stored
    as log 1/tau, as CLIP does)."""

    def __init__(self, config=None, *, d_embed=256, matryoshka_dims=(16, 32, 64, 128, 256),
                 head="linear", temperature=0.05, learn_temperature=False, tokenizer=None):
        super().__init__()
        config = config or GPTConfig.preset("names", causal=False)
        dims, _ = check_dims(matryoshka_dims, d_embed)
        if dims[-1] != d_embed:
            raise ValueError(f"matryoshka_dims: expected increasing sizes ending at d_embed="
                             f"{d_embed}, got {dims}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected a positive number, got {temperature}")
        self.config, self.d_embed, self.matryoshka_dims = config, d_embed, dims
        self.tokenizer = tokenizer or CharTokenizer.names()
        self.trunk = GPT(config)
        self.pooling = "last" if config.causal else "mean"
        if head == "linear":
            self.proj = nn.Linear(config.d_model, d_embed, bias=False)
        elif head == "mlp":
            self.proj = nn.Sequential(nn.Linear(config.d_model, d_embed), nn.GELU(),
                                      nn.Linear(d_embed, d_embed))
        else:
            raise ValueError(f"head: expected 'linear' or 'mlp', got {head!r}")
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_scale = nn.Parameter(log_scale) if learn_temperature else None
        if not learn_temperature:
            self.register_buffer("fixed_log_scale", log_scale)

    @property
    def temperature(self):
        """The InfoNCE temperature tau, a scalar tensor (differentiable when learnable)."""
        return (-(self.log_scale if self.log_scale is not None else self.fixed_log_scale)).exp()

    def tokenize(self, texts):
        """Strings -> token lists: BOS + characters + BOS, as the names LM sees them."""
        bos = self.tokenizer.bos
        return [[bos] + self.tokenizer.encode(t) + [bos] for t in texts]

    def forward(self, tokens, cu_seqlens, max_seqlen):
        """Packed tokens (T,) int64 with cu_seqlens (N+1,) int32 -> raw embeddings (N, d_embed)."""
        hidden = self.trunk.hidden_states(tokens, cu_seqlens=cu_seqlens,
                                          max_seqlen=max_seqlen)                  # (T, d_model)
        pool = last_pool if self.pooling == "last" else mean_pool
        return self.proj(pool(hidden, cu_seqlens))                                 # (N, d_embed)

    def forward_padded(self, idx, lengths):
        """Padded ids (B, T) with lengths (B,) -> (B, d_embed); the pads never reach the trunk."""
        return self(*unpad(idx, lengths))

    def loss(self, a, b, dims=None):
        """Matryoshka InfoNCE between raw embeddings a, b (N, d_embed) of N positive pairs;
        dims=None uses matryoshka_dims, dims=(d_embed,) is the full-dimension baseline."""
        return matryoshka_loss(a, b, dims or self.matryoshka_dims, temperature=self.temperature)

    @torch.no_grad()
    def embed(self, x, dim=None, *, batch_tokens=16384):
        """L2-normalised embeddings (N, dim) of the first `dim` dimensions (all when None).
        x: a list of strings (packed in chunks of about batch_tokens tokens) or packed
        (tokens, cu_seqlens, max_seqlen)."""
        if dim is not None and not 1 <= dim <= self.d_embed:
            raise ValueError(f"dim: expected None or an int in [1, {self.d_embed}], got {dim}")
        if isinstance(x, tuple):
            out = self(*x)
        else:
            if isinstance(x, str) or not all(isinstance(t, str) for t in x):
                raise TypeError(f"x: expected a list of strings or packed (tokens, cu_seqlens, "
                                f"max_seqlen), got {type(x).__name__}")
            device = self.trunk.wte.weight.device
            seqs, chunks, start = self.tokenize(x), [], 0
            while start < len(seqs):
                stop, used = start, 0
                while stop < len(seqs) and (stop == start
                                            or used + len(seqs[stop]) <= batch_tokens):
                    used += len(seqs[stop])
                    stop += 1
                chunks.append(self(*pack(seqs[start:stop], device=device)))
                start = stop
            out = torch.cat(chunks) if chunks else self.trunk.wte.weight.new_zeros(0, self.d_embed)
        return F.normalize(out if dim is None else out[:, :dim], dim=-1)
