"""The captioner: encoders and projectors feeding a gptcore GPT, which reads the projected
tokens spliced into its text (LLaVA), packed (varlen), and writes the caption after them."""
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gptcore.multimodal import data
from gptcore.multimodal.inputs import InputEncoders
from gptcore.multimodal.splice import gather, layout

SPECIALS = ("<bos>", "<eos>", "<image>", "<audio>", "<video>")


class Vocab:
    """Word-level tokens: the specials, then the caption words in sorted order."""

    def __init__(self, words):
        self.itos = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.bos, self.eos = self.stoi["<bos>"], self.stoi["<eos>"]
        self.placeholders = {kind: self.stoi[f"<{kind}>"] for kind in data.MAKERS}

    @classmethod
    def for_captions(cls):
        words = {"a", "moving", "tone"}
        for attributes in data.ATTRIBUTES.values():
            for values in attributes.values():
                words.update(values)
        return cls(words)

    def __len__(self):
        return len(self.itos)

    def encode(self, text):
        unknown = [w for w in text.split() if w not in self.stoi]
        if unknown:
            raise ValueError(f"text: expected words of the caption vocabulary, got {unknown}")
        return [self.stoi[w] for w in text.split()]

    def decode(self, ids):
        """The words before the first <eos>, specials dropped."""
        words = []
        for i in ids:
            if i == self.eos:
                break
            if self.itos[i] not in SPECIALS:
                words.append(self.itos[i])
        return " ".join(words)


@dataclass
class CaptionerConfig:
    d_enc: int = 64              # width of every encoder
    enc_layers: int = 2          # bidirectional blocks per encoder
    enc_heads: int = 4
    patch: int = 4               # ViT patch side (pixels), images and video frames
    stem: int = 0                # width of the ViTs' conv stem (0: none)
    pixel_mean: float = 0.17     # the ViTs standardise pixels: (x - pixel_mean) / pixel_std,
    pixel_std: float = 0.22      # the mean and std of 500 generated images (videos: 0.16, 0.21)
    projector: str = "mlp2x_gelu"  # "linear" or "mlp2x_gelu" (LLaVA-1.5)
    n_mels: int = 32             # log-mel bands of the audio features
    n_fft: int = 256             # STFT window (32 ms at 8 kHz)
    hop: int = 64                # STFT hop (8 ms): 63 frames for half a second
    video_pool: int = 2          # tokens per frame side after pooling: pool**2 video tokens
    temporal: str = "conv"       # "conv": temporal projector; "mean": frame averaging;
                                 # "stack": frames stacked as channels through one ViT
    image_pool: int = 0          # tokens per image side after pooling (0: every patch token)
    cell_projector: bool = False # pooled image and video tokens: projector weights per cell
    video_still: bool = False    # video tokens also the middle frame's through the image encoder


class Captioner(nn.Module):
    """forward(batch) -> (logits (T, vocab), loss) on a batch from `collate`;
    caption(items) -> the greedy captions."""

    def __init__(self, gpt, vocab, config=None):
        super().__init__()
        self.config = c = config or CaptionerConfig()
        self.gpt, self.vocab = gpt, vocab
        self.inputs = InputEncoders(c, gpt.config.d_model)

    def features(self, kind, raw):
        return self.inputs.features(kind, raw)

    def n_tokens(self, kind, features):
        return self.inputs.n_tokens(kind, features)

    def collate(self, items):
        """items: (token_ids, [(kind, raw input), ...]) per sequence -> a batch dict."""
        token_ids = [ids for ids, _ in items]
        features = [[(kind, self.features(kind, raw)) for kind, raw in inputs]
                    for _, inputs in items]
        kinds = [[kind for kind, _ in seq] for seq in features]
        counts = [[self.n_tokens(kind, f) for kind, f in seq] for seq in features]
        plan = layout(token_ids, kinds, counts, self.vocab.placeholders)
        by_kind = {kind: [f for seq in features for k, f in seq if k == kind]
                   for kind in self.vocab.placeholders}
        return {"token_ids": token_ids, "features": by_kind, "kinds": kinds, "counts": counts,
                "layout": plan, "targets": plan.targets}

    def encode(self, features_by_kind):
        """{kind: list of features} -> {kind: projected tokens (sum n, d_model)}."""
        return self.inputs(features_by_kind)

    def forward(self, batch):
        packed = gather(batch["layout"], batch["token_ids"], self.encode(batch["features"]),
                        self.gpt.wte)
        plan = packed.layout
        return self.gpt(inputs_embeds=packed.inputs_embeds, targets=plan.targets,
                        cu_seqlens=plan.cu_seqlens, max_seqlen=plan.max_seqlen)

    @torch.no_grad()
    def caption(self, items, max_words=8):
        """Greedy captions (at most max_words tokens) of items (prompt token_ids, inputs),
        encoding each input once."""
        batch = self.collate(items)
        tokens = self.encode(batch["features"])
        sequences = [list(ids) for ids, _ in items]
        done = [False] * len(items)
        # a generated <bos> or placeholder would ask the layout for an input that is not there
        banned = torch.tensor([self.vocab.bos, *self.vocab.placeholders.values()])
        for _ in range(max_words):
            plan = layout(sequences, batch["kinds"], batch["counts"], self.vocab.placeholders)
            packed = gather(plan, sequences, tokens, self.gpt.wte)
            logits, _ = self.gpt(inputs_embeds=packed.inputs_embeds, cu_seqlens=plan.cu_seqlens,
                                 max_seqlen=plan.max_seqlen)
            last_logits = logits[plan.cu_seqlens[1:].long() - 1]              # (N, vocab)
            last_logits[:, banned] = float("-inf")
            last = last_logits.argmax(-1).tolist()                              # (N,)
            for n, token in enumerate(last):
                if not done[n]:
                    sequences[n].append(token)
                    done[n] = token == self.vocab.eos
            if all(done):
                break
        return [self.vocab.decode(seq[len(ids):]) for seq, (ids, _) in zip(sequences, items)]

    def set_trainable(self, gpt=True, encoders=True, projectors=True):
        """Freeze or unfreeze the parts (LLaVA stage 1 trains only the projectors)."""
        for module, flag in ((self.gpt, gpt), (self.inputs.encoders, encoders),
                             (self.inputs.projectors, projectors)):
            module.requires_grad_(flag)

    def config_dict(self):
        return {"captioner": asdict(self.config), "gpt": self.gpt.config.to_dict()}


def caption_item(vocab, example, with_caption=True):
    """(token_ids, inputs) of one captioning example: "<bos> <kind> caption <eos>", or only
    the prompt "<bos> <kind>" to caption."""
    text = f"<bos> <{example.kind}>" + (f" {example.caption} <eos>" if with_caption else "")
    return vocab.encode(text), [(example.kind, example.data)]
