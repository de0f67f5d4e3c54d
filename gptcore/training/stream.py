"""Stream data: a text file (or every file under a directory) read as one token stream, as
nanoGPT trains. The last 10% of the tokens are validation; a training batch is batch_size
random windows of block_size + 1 tokens. The stream is tokenised once and cached beside the
checkpoints (RUN/data/stream-<key>/: tokens.bin, a flat uint16 or uint32 array read through a
memory map, and stream.json with the tokenizer), written atomically; the key is a hash of the
text and the tokenizer's settings, so a changed file or tokenizer is tokenised afresh."""
import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from gptcore.training import atomic, data

VAL_FRACTION = 0.1          # nanoGPT's split: the last 10% of the stream
SHIPPED = {"tinyshakespeare": "datasets/tinyshakespeare.txt"}   # names --data also accepts
CACHE_DIR = "data"          # inside the run directory


def source_files(path, argument="--data"):
    """The files a stream reads, in order: `path` itself, or every regular non-hidden file
    under the directory `path` sorted by relative name, or a shipped text named in SHIPPED."""
    if str(path) in SHIPPED:
        return [Path(str(resources.files("gptcore").joinpath(SHIPPED[str(path)])))]
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if files:
            return files
        raise ValueError(f"{argument}: expected a text file or a directory holding text files, "
                         f"got {str(path)!r}, an empty directory")
    raise ValueError(f"{argument}: expected a text file, a directory of text files or one of "
                     f"{', '.join(sorted(SHIPPED))}, got {str(path)!r}, which does not exist")


def read_text(path, argument="--data"):
    """(text, sha256 of the files' names and bytes): the files of source_files, concatenated."""
    digest, parts = hashlib.sha256(), []
    for file in source_files(path, argument):
        raw = file.read_bytes()
        try:
            parts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{argument}: expected UTF-8 text, got byte 0x{raw[err.start]:02x} "
                             f"at offset {err.start} in {str(file)!r}") from None
        digest.update(file.name.encode() + b"\0" + raw + b"\0")
    text = "".join(parts)
    if not text:
        raise ValueError(f"{argument}: expected some text, got an empty file in {str(path)!r}")
    return text, digest.hexdigest()


def make_tokenizer(text, kind, vocab_size):
    """A character tokenizer over the text's characters, or byte-level BPE trained on it."""
    if kind == "bpe":
        return data.BPETokenizer.train(_chunks(text), vocab_size)
    return data.CharTokenizer(sorted(set(text)))


def _chunks(text, lines=2000):
    """The text in pieces of a few thousand lines (BPE trains and encodes them in parallel)."""
    all_lines = text.splitlines(keepends=True)
    return ["".join(all_lines[i:i + lines]) for i in range(0, len(all_lines), lines)]


def encode(text, tok):
    """The whole text as token ids, uint16 when the vocabulary fits, else uint32."""
    if isinstance(tok, data.BPETokenizer):
        ids = [i for enc in tok.tokenizer.encode_batch(_chunks(text)) for i in enc.ids]
    else:
        ids = tok.encode(text)
    return np.asarray(ids, dtype=np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32)


def load(path, kind="char", vocab_size=512, cache_root=None, argument="--data"):
    """(tokens (N,) uint16/uint32, tokenizer, cache directory or None). With cache_root (a run
    directory) the tokens come from, or go to, cache_root/data/stream-<key>/ (older stream
    caches there are removed); without it they are tokenised in memory."""
    text, text_hash = read_text(path, argument)
    settings = {"kind": kind} if kind == "char" else {"kind": kind, "vocab_size": vocab_size}
    key = hashlib.sha256((text_hash + json.dumps(settings)).encode()).hexdigest()[:16]
    if cache_root is None:
        tok = make_tokenizer(text, kind, vocab_size)
        return encode(text, tok), tok, None
    parent = Path(cache_root) / CACHE_DIR
    cached = parent / f"stream-{key}"
    if cached.is_dir():
        try:
            atomic.verify(cached)
            return _open(cached)
        except atomic.DamagedError:         # a damaged cache is only a cache: rebuild it
            atomic.remove(cached)
    tok = make_tokenizer(text, kind, vocab_size)
    tokens = encode(text, tok)
    tmp = atomic.stage(parent, cached.name)
    atomic.write_file(tmp / "tokens.bin", tokens.tobytes())
    atomic.write_file(tmp / "stream.json", json.dumps({
        "tokenizer": tok.to_dict(), "dtype": tokens.dtype.name, "tokens": len(tokens),
        "source": str(path), "settings": settings}).encode())
    atomic.commit(tmp, cached)
    for old in parent.glob("stream-*"):
        if old != cached and old.is_dir():
            atomic.remove(old)
    return _open(cached)


def _open(cached):
    info = json.loads((cached / "stream.json").read_text())
    tokens = np.memmap(cached / "tokens.bin", dtype=info["dtype"], mode="r")
    return tokens, data.tokenizer_from_dict(info["tokenizer"]), cached


def split(tokens, val_fraction=VAL_FRACTION):
    """(train, val): the stream cut by position, the last val_fraction held out."""
    cut = int(len(tokens) * (1 - val_fraction))          # nanoGPT: data[:int(n*0.9)]
    return tokens[:cut], tokens[cut:]


def _windows(tokens, starts, block_size, device):
    """{"idx", "targets"} (B, T) int64 from the windows of block_size + 1 tokens at starts."""
    rows = np.asarray(tokens[np.asarray(starts)[:, None] + np.arange(block_size + 1)],
                      dtype=np.int64)                                   # (B, T + 1)
    rows = torch.from_numpy(rows)
    return {"idx": rows[:, :-1].to(device), "targets": rows[:, 1:].to(device)}


def check_length(tokens, block_size, what, argument="--data"):
    if len(tokens) < block_size + 1:
        raise ValueError(f"{argument}: expected at least block_size + 1 = {block_size + 1} "
                         f"tokens in the {what}, got {len(tokens)} (a longer text or a smaller "
                         f"--block-size)")


class StreamBatches:
    """batches(step) -> batch_size random windows of the stream: deterministic in (seed, step),
    so a resumed run sees the same data; each rank of a data-parallel job draws its own."""

    def __init__(self, tokens, block_size, batch_size, *, seed=0, rank=0, world_size=1,
                 device=None):
        check_length(tokens, block_size, "training split")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.rank, self.world_size, self.device = seed, rank, world_size, device

    def __call__(self, step):
        g = torch.Generator().manual_seed(
            self.seed * 1_000_003 + step * self.world_size + self.rank)
        starts = torch.randint(len(self.tokens) - self.block_size, (self.batch_size,),
                               generator=g)
        return _windows(self.tokens, starts.numpy(), self.block_size, self.device)


def eval_batches(tokens, block_size, batch_size, limit=None, device=None):
    """Batches of the windows that tile `tokens` (stride block_size: every token but the first
    is predicted once), or `limit` batches of them spread evenly over the split."""
    check_length(tokens, block_size, "validation split")
    starts = np.arange(0, len(tokens) - block_size, block_size)
    if limit is not None and len(starts) > limit * batch_size:
        starts = starts[np.linspace(0, len(starts) - 1, limit * batch_size).round().astype(int)]
    return [_windows(tokens, starts[i:i + batch_size], block_size, device)
            for i in range(0, len(starts), batch_size)]
