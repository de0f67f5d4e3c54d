"""One embedding space for text, images, audio and video (the essay's natively multimodal
embedder in miniature): an input is any mix of text and raw inputs; each raw input becomes its
encoder's projected tokens, spliced among the text's word embeddings (as the captioner reads
them), and one bidirectional gptcore trunk reads the packed batch, so modalities meet in every
layer. Mean pooling, an MLP head and Matryoshka prefixes, as gptcore.embed.EmbeddingModel.

fusion="late" is the baseline with separate towers: text through the trunk alone, each raw input
through its encoder, mean-pooled, and a head of its own; the parts of a mixed input meet only at
the end, as the sum of their normalised embeddings."""
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.embed.loss import check_dims, matryoshka_loss
from gptcore.embed.pooling import mean_pool
from gptcore.model import GPT
from gptcore.model.config import GPTConfig
from gptcore.multimodal.captioner import CaptionerConfig
from gptcore.multimodal.inputs import InputEncoders
from gptcore.multimodal.splice import gather, layout
from gptcore.ops import packing

KIND_OF_NDIM = {1: "audio", 3: "image", 4: "video"}     # (samples,), (3, H, W), (F, 3, H, W)
FUSIONS = ("early", "late")


def kind_of(x):
    """The kind of a raw input tensor, from its rank."""
    if not isinstance(x, torch.Tensor) or x.ndim not in KIND_OF_NDIM:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"inputs: expected strings or tensors of shape (samples,) audio, "
                        f"(3, H, W) image or (F, 3, H, W) video, got {got}")
    return KIND_OF_NDIM[x.ndim]


def _head(d_in, d_embed):
    return nn.Sequential(nn.Linear(d_in, d_embed), nn.GELU(), nn.Linear(d_embed, d_embed))


class MultimodalEmbedder(nn.Module):
    """vocab: a gptcore.multimodal.captioner.Vocab (the words text may use, and the
    placeholders); trunk: a GPTConfig (default: the names preset over vocab, bidirectional);
    inputs: a CaptionerConfig for the encoders. embed(inputs, dim) -> (N, dim) L2-normalised."""

    def __init__(self, vocab, *, trunk=None, inputs=None, d_embed=128,
                 matryoshka_dims=(4, 8, 16, 32, 64, 128), temperature=0.05, fusion="early"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {FUSIONS}, got {fusion!r}")
        dims, _ = check_dims(matryoshka_dims, d_embed)
        if dims[-1] != d_embed:
            raise ValueError(f"matryoshka_dims: expected increasing sizes ending at d_embed="
                             f"{d_embed}, got {dims}")
        trunk = trunk or GPTConfig.preset("names", vocab_size=len(vocab), block_size=128,
                                          causal=False)
        self.vocab, self.fusion, self.temperature = vocab, fusion, temperature
        self.d_embed, self.matryoshka_dims = d_embed, dims
        self.trunk = GPT(trunk)
        self.inputs = InputEncoders(inputs or CaptionerConfig(stem=32), trunk.d_model)
        self.head = _head(trunk.d_model, d_embed)
        if fusion == "late":
            self.heads = nn.ModuleDict({kind: _head(trunk.d_model, d_embed)
                                        for kind in self.inputs.encoders})

    def parts(self, item):
        """One input (a string, a raw tensor, or a tuple / list of those) -> its parts."""
        parts = list(item) if isinstance(item, (tuple, list)) else [item]
        if not parts:
            raise ValueError("inputs: expected non-empty items, got an empty one")
        for p in parts:
            if not isinstance(p, str):
                kind_of(p)
        return parts

    def collate(self, items):
        """items -> a batch for forward(): the layout of every item, and its inputs' features."""
        token_ids, kinds, features = [], [], []
        for item in items:
            ids, seq_kinds, seq_features = [], [], []
            for part in self.parts(item):
                if isinstance(part, str):
                    ids += self.vocab.encode(part)
                else:
                    kind = kind_of(part)
                    ids.append(self.vocab.placeholders[kind])
                    seq_kinds.append(kind)
                    seq_features.append(self.inputs.features(kind, part))
            token_ids.append(ids)
            kinds.append(seq_kinds)
            features.append(seq_features)
        counts = [[self.inputs.n_tokens(k, f) for k, f in zip(ks, fs)]
                  for ks, fs in zip(kinds, features)]
        by_kind = {kind: [f for ks, fs in zip(kinds, features) for k, f in zip(ks, fs) if k == kind]
                   for kind in self.vocab.placeholders}
        plan = layout(token_ids, kinds, counts, self.vocab.placeholders)
        return {"token_ids": token_ids, "kinds": kinds, "counts": counts, "features": by_kind,
                "layout": plan}

    def forward(self, batch):
        """A collated batch of N items -> raw embeddings (N, d_embed)."""
        tokens = self.inputs(batch["features"])                       # {kind: (sum n, d_model)}
        if self.fusion == "early":
            return self.head(self._pooled(batch["layout"], batch["token_ids"], tokens))
        return self._late(batch, tokens)

    def _pooled(self, plan, token_ids, tokens):
        packed = gather(plan, token_ids, tokens, self.trunk.wte)
        hidden = self.trunk.hidden_states(inputs_embeds=packed.inputs_embeds,
                                          cu_seqlens=plan.cu_seqlens,
                                          max_seqlen=plan.max_seqlen)                 # (T, d)
        return mean_pool(hidden, plan.cu_seqlens)                                     # (N, d)

    def _late(self, batch, tokens):
        """Each item's text alone through the trunk, each input's tokens pooled through its own
        head; an item's embedding is the sum of its parts' normalised embeddings."""
        placeholders = set(self.vocab.placeholders.values())
        text = [[t for t in ids if t not in placeholders] for ids in batch["token_ids"]]
        out = torch.zeros(len(text), self.d_embed, device=self.head[0].weight.device)
        has_text = [i for i, ids in enumerate(text) if ids]
        if has_text:
            plan = layout([text[i] for i in has_text], [[]] * len(has_text),
                          [[]] * len(has_text), self.vocab.placeholders)
            z = self.head(self._pooled(plan, [text[i] for i in has_text], {}))
            out = out.index_add(0, torch.tensor(has_text), F.normalize(z, dim=-1))
        for kind, kind_tokens in tokens.items():
            owners = [i for i, ks in enumerate(batch["kinds"]) for k in ks if k == kind]
            counts = [c for ks, cs in zip(batch["kinds"], batch["counts"])
                      for k, c in zip(ks, cs) if k == kind]
            pooled = mean_pool(kind_tokens, packing.cu_seqlens(counts))               # (n, d)
            z = F.normalize(self.heads[kind](pooled), dim=-1)
            out = out.index_add(0, torch.tensor(owners), z)
        return out

    def loss(self, a, b, dims=None, same=None):
        """Matryoshka InfoNCE between raw embeddings a, b (N, d_embed) of N positive pairs."""
        return matryoshka_loss(a, b, dims or self.matryoshka_dims, temperature=self.temperature,
                               same=same)

    @torch.no_grad()
    def embed(self, inputs, dim=None, *, batch_size=256):
        """L2-normalised embeddings (N, dim) of the first `dim` dimensions (all when None).
        inputs: a list whose items are strings, raw tensors (audio (samples,), image (3, H, W),
        video (F, 3, H, W)) or tuples / lists mixing them (one embedding per item)."""
        if dim is not None and not 1 <= dim <= self.d_embed:
            raise ValueError(f"dim: expected None or an int in [1, {self.d_embed}], got {dim}")
        if isinstance(inputs, (str, torch.Tensor)):
            raise TypeError(f"inputs: expected a list of items, got {type(inputs).__name__}")
        chunks = [self(self.collate(inputs[i:i + batch_size]))
                  for i in range(0, len(inputs), batch_size)]
        out = torch.cat(chunks) if chunks else self.head[0].weight.new_zeros(0, self.d_embed)
        return F.normalize(out if dim is None else out[:, :dim], dim=-1)
