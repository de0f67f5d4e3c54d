"""`gptcore sample` marks a sample "(new)" exactly when it is not a document of the checkpoint's
training split: held-out (validation) documents count as new, training documents never do.

The data: every two-letter word over a..e (25 documents, 2-3 held out). A model trained briefly
on them writes mostly two-letter words, so among 200 samples there are training words,
held-out words and words that are no document at all."""
import itertools
import json

import pytest
import torch

from gptcore import cli
from gptcore.training import checkpoint, data


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_new_marks_exactly_the_samples_outside_the_training_split(tmp_path, capsys):
    words = ["".join(p) for p in itertools.product("abcde", repeat=2)]
    text = tmp_path / "words.txt"
    text.write_text("\n".join(words) + "\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "names", "--data", str(text), "--steps", "60",
                     "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", str(out), "-n", "400", "--temperature", "1.0"]) == 0
    printed = capsys.readouterr().out.splitlines()
    samples = json.loads(printed[-1])["samples"]
    lines = printed[:-1]
    assert len(lines) == len(samples) == 400

    meta = json.loads((checkpoint.resolve(out) / "config.json").read_text())["meta"]
    train, val = data.split(words, meta.get("val_fraction", 0.1), seed=meta.get("split_seed", 0))
    assert val and set(train) | set(val) == set(words)
    kinds = {"train": 0, "held out": 0, "no document": 0}
    for line, sample in zip(lines, samples):
        marked = line.endswith("  (new)")
        assert line.removesuffix("  (new)") == sample, (line, sample)
        if sample in train:
            assert not marked, f"{sample!r} is a training document but printed {line!r}"
            kinds["train"] += 1
        else:
            assert marked, f"{sample!r} is not a training document but printed {line!r}"
            kinds["held out" if sample in val else "no document"] += 1
    # every case occurred, so each assertion above was exercised
    assert all(kinds.values()), kinds
