"""`gptcore sample --prompt` on a stream checkpoint (tokens printed as they come, past
block_size) and `gptcore eval` (loss, perplexity, bits per character), against losses and
tokens computed here with plain loops."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from gptcore import GPT, GPTConfig, cli
from gptcore.training import checkpoint

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 30


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A stream run (block 16) on TEXT and a documents run (microgpt)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "book.txt").write_text(TEXT)
    threads = torch.get_num_threads()
    assert cli.main(["train", "--preset", "shakespeare-char", "--data", str(root / "book.txt"),
                     "--n-layer", "1", "--d-model", "32", "--n-head", "2", "--d-ff", "64",
                     "--block-size", "16", "--batch-size", "4", "--steps", "20", "--threads",
                     "1", "--quiet", "--out", str(root / "stream")]) == 0
    assert cli.main(["train", "--preset", "microgpt", "--steps", "5", "--quiet",
                     "--out", str(root / "docs")]) == 0
    torch.set_num_threads(threads)
    return root


def _last_json(capsys):
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


def _naive_greedy(model, ids, n):
    """Greedy continuation by full recomputation of the last block_size tokens each step."""
    ids = list(ids)
    for _ in range(n):
        window = torch.tensor([ids[-model.config.block_size:]])
        ids.append(int(model(window)[0][0, -1].argmax()))
    return ids


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_stream_matches_a_naive_loop_past_block_size(pos):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, d_model=16, n_head=2,
                          pos=pos)).eval()
    prompt = [3, 1, 4]
    got = list(model.stream(prompt, 20, temperature=0))
    assert got == _naive_greedy(model, prompt, 20)[3:]
    inside = model.generate(torch.tensor([prompt]), 5, temperature=0)[0, 3:].tolist()
    assert got[:5] == inside
    long_prompt = list(range(11)) * 2                       # longer than block_size
    assert list(model.stream(long_prompt, 4, temperature=0)) == \
        _naive_greedy(model, long_prompt, 4)[len(long_prompt):]


def test_stream_rejects_bad_arguments():
    model = GPT(GPTConfig(vocab_size=11, block_size=8))
    with pytest.raises(ValueError, match="max_new_tokens: expected an int >= 0, got -1"):
        list(model.stream([1], -1))
    with pytest.raises(ValueError, match="idx: expected at least one token"):
        list(model.stream([], 3))


def test_sample_streams_text_past_block_size(runs, capsys):
    assert cli.main(["sample", "--ckpt", str(runs / "stream"), "--prompt", "To be",
                     "--max-new-tokens", "40", "-n", "2", "--temperature", "0.8",
                     "--top-k", "5"]) == 0
    result, out = _last_json(capsys)
    assert len(result["samples"]) == 2 and result["max_new_tokens"] == 40
    for sample in result["samples"]:
        assert sample.startswith("To be") and len(sample) == 5 + 40     # one char per token
        assert set(sample) <= set(TEXT)
        assert sample in out                                # printed as text before the JSON
    assert cli.main(["sample", "--ckpt", str(runs / "stream"), "--temperature", "0",
                     "--max-new-tokens", "30", "-n", "1"]) == 0
    greedy, _ = _last_json(capsys)
    model, meta = checkpoint.load_model(runs / "stream")
    chars = meta["tokenizer"]["chars"]
    expected = _naive_greedy(model.eval(), [chars.index("\n")], 30)
    assert greedy["samples"][0] == "".join(chars[i] for i in expected)


def test_eval_on_the_validation_split_matches_a_plain_loop(runs, capsys):
    assert cli.main(["eval", "--ckpt", str(runs / "stream"), "--batch-size", "7"]) == 0
    result, _ = _last_json(capsys)
    model, meta = checkpoint.load_model(runs / "stream")
    chars = meta["tokenizer"]["chars"]
    ids = [chars.index(c) for c in TEXT]
    val = ids[int(len(ids) * 0.9):]                          # nanoGPT's split
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val) - 16, 16):
            window = torch.tensor([val[start:start + 17]])
            logits = model.eval()(window[:, :-1])[0]
            total += float(F.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
            count += 16
    # float32 forward passes batched differently: sums of ~1e3 terms agree to ~1e-5
    assert result["loss"] == pytest.approx(total / count, abs=2e-4)
    assert result["tokens"] == result["characters"] == count
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-3)
    assert result["bits_per_char"] == pytest.approx(total / count / math.log(2), abs=3e-4)
    assert result["split"] == "validation" and result["mode"] == "stream"


def test_eval_on_another_file_and_on_a_documents_checkpoint(runs, capsys, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("that is the question, or not\n" * 3)
    assert cli.main(["eval", "--ckpt", str(runs / "stream"), "--data", str(other)]) == 0
    result, _ = _last_json(capsys)
    assert result["split"] == "all" and result["tokens"] == (len(other.read_text()) - 1) // 16 * 16
    assert cli.main(["eval", "--ckpt", str(runs / "docs")]) == 0
    result, _ = _last_json(capsys)
    assert result["mode"] == "documents" and result["loss"] > 0
    # microgpt's names: each name's letters and its end are the characters predicted
    assert result["characters"] == result["tokens"]


@pytest.mark.parametrize("line, expected", [
    ("eval --ckpt {root}/nothing", "gptcore eval: --ckpt: expected a checkpoint directory"),
    ("eval --ckpt {root}/stream --data {root}/upper.txt", "gptcore eval: --data: expected "
                                                          "characters from the tokenizer's"),
    ("eval --ckpt {root}/stream --data {root}/none.txt", "gptcore eval: --data: expected a "
                                                         "text file"),
    ("sample --ckpt {root}/stream --prompt XYZ", "gptcore sample: --prompt: expected "
                                                 "characters from the tokenizer's"),
])
def test_bad_inputs_one_line(runs, capsys, line, expected):
    (runs / "upper.txt").write_text("QUESTION\n")
    assert cli.main(line.format(root=runs).split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err
