"""The stream data mode (gptcore.training.stream): files read as one text, the position split,
the token cache (written once, reused, rebuilt when the text or the tokenizer changes or the
cache is damaged) and the batches of random windows."""
import json

import numpy as np
import pytest
import torch

from gptcore.training import data, stream

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 8


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    return path


def test_a_directory_reads_its_files_in_name_order_skipping_hidden(tmp_path):
    (tmp_path / "b.txt").write_text("bee\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("sea\n")
    (tmp_path / "a.txt").write_text("ay\n")
    (tmp_path / ".hidden").write_text("never\n")
    text, _ = stream.read_text(tmp_path)
    assert text == "ay\nbee\nsea\n"


def test_bad_sources_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="--data: .*which does not exist"):
        stream.source_files(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--data: .*an empty directory"):
        stream.source_files(tmp_path / "empty")
    (tmp_path / "latin1.txt").write_bytes(b"zo\xe9\n")
    with pytest.raises(ValueError, match="expected UTF-8 text, got byte 0xe9 at offset 2"):
        stream.read_text(tmp_path / "latin1.txt")


def test_shipped_tinyshakespeare_splits_as_nanogpt_does():
    # nanoGPT's data/shakespeare_char/prepare.py prints these counts for this file
    tokens, tok, _ = stream.load("tinyshakespeare")
    assert tok.vocab_size == 65 + 1                       # its 65 characters and our BOS
    assert tokens.dtype == np.uint16
    train, val = stream.split(tokens)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert tok.decode(train[:14].tolist()) == "First Citizen:"


def test_char_tokens_round_trip_and_large_vocabularies_use_uint32(text_file):
    tokens, tok, _ = stream.load(text_file)
    assert tok.decode(tokens.tolist()) == TEXT
    wide = data.CharTokenizer([chr(c) for c in range(0x4E00, 0x4E00 + 70_000)
                               if not 0xD800 <= c < 0xE000])
    ids = stream.encode(chr(0x4E00 + 69_000), wide)
    assert ids.dtype == np.uint32 and ids.tolist() == [wide.index[chr(0x4E00 + 69_000)]]


def test_bpe_tokens_decode_to_the_text(text_file):
    tokens, tok, _ = stream.load(text_file, "bpe", 300)
    assert isinstance(tok, data.BPETokenizer) and tok.vocab_size <= 300
    assert len(tokens) < len(TEXT)                      # merges happened
    assert tok.decode(tokens.tolist()) == TEXT


def test_the_cache_is_reused_until_the_text_or_tokenizer_changes(text_file, tmp_path,
                                                               monkeypatch):
    run = tmp_path / "run"
    tokens, _, first = stream.load(text_file, cache_root=run)
    assert first.parent == run / "data" and (first / "tokens.bin").stat().st_size == 2 * len(TEXT)
    assert isinstance(tokens, np.memmap)

    def no_tokenising(*_):
        raise AssertionError("tokenised again")
    monkeypatch.setattr(stream, "make_tokenizer", no_tokenising)
    again, _, second = stream.load(text_file, cache_root=run)
    assert second == first and np.array_equal(again, tokens)
    monkeypatch.undo()

    text_file.write_text(TEXT + "Exeunt.\n")
    _, _, changed = stream.load(text_file, cache_root=run)
    assert changed != first and not first.exists()       # the stale cache is removed
    _, _, bpe = stream.load(text_file, "bpe", 300, cache_root=run)
    assert bpe != changed and json.loads((bpe / "stream.json").read_text())["settings"] == \
        {"kind": "bpe", "vocab_size": 300}


def test_a_damaged_cache_is_rebuilt(text_file, tmp_path):
    _, _, cached = stream.load(text_file, cache_root=tmp_path)
    (cached / "tokens.bin").write_bytes(b"\0\0")
    tokens, tok, again = stream.load(text_file, cache_root=tmp_path)
    assert again == cached and tok.decode(tokens.tolist()) == TEXT


def test_batches_are_windows_of_the_stream_and_deterministic_in_step():
    tokens = np.arange(1000, dtype=np.uint16)             # token i at position i: easy to read
    batches = stream.StreamBatches(tokens, block_size=16, batch_size=5, seed=3)
    batch = batches(7)
    assert batch["idx"].shape == batch["targets"].shape == (5, 16)
    assert batch["idx"].dtype == torch.int64
    starts = batch["idx"][:, 0]
    assert torch.equal(batch["idx"], starts[:, None] + torch.arange(16))
    assert torch.equal(batch["targets"], batch["idx"] + 1)
    assert int(starts.max()) + 16 < 1000
    assert torch.equal(batches(7)["idx"], batch["idx"])
    assert not torch.equal(batches(8)["idx"], batch["idx"])
    other_rank = stream.StreamBatches(tokens, 16, 5, seed=3, rank=1, world_size=2)
    assert not torch.equal(other_rank(7)["idx"],
                           stream.StreamBatches(tokens, 16, 5, seed=3, world_size=2)(7)["idx"])


def test_eval_batches_tile_the_split_or_spread_a_limited_number():
    tokens = np.arange(103, dtype=np.uint16)
    batches = stream.eval_batches(tokens, block_size=10, batch_size=4)
    targets = torch.cat([b["targets"].flatten() for b in batches])
    assert targets.tolist() == list(range(1, 101))          # each predicted once, in order
    limited = stream.eval_batches(tokens, block_size=10, batch_size=2, limit=2)
    starts = [int(s) for b in limited for s in b["idx"][:, 0]]
    assert len(starts) == 4 and starts[0] == 0 and starts[-1] == 90


def test_too_short_a_stream_is_refused():
    with pytest.raises(ValueError, match=r"--data: expected at least block_size \+ 1 = 65 "
                                         r"tokens in the training split, got 10"):
        stream.StreamBatches(np.zeros(10, np.uint16), 64, 2)
