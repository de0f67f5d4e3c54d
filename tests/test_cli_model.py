"""`gptcore train` and `gptcore sample` end to end, in-process and short."""
import json

import pytest
import torch

from gptcore import cli


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_then_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "microgpt", "--steps", "30", "--out", str(out),
                     "--quiet"]) == 0
    summary = _last_json(capsys)
    for key in ("preset", "steps", "seconds", "tokens_per_s", "train_loss", "val_loss",
                "total_params", "active_params", "backend"):
        assert key in summary, key
    assert summary["steps"] == 30 and summary["total_params"] == 4192
    assert summary["backend"] == "cpp"
    assert {p.name for p in out.iterdir()} == {"checkpoints", "loss.png", "summary.json"}
    newest = out / "checkpoints" / "step-00000030"
    assert {p.name for p in newest.iterdir()} == {"model.safetensors", "optimizer.safetensors",
                                                  "config.json", "state.json", "manifest.json"}
    assert cli.main(["sample", "--ckpt", str(out), "-n", "6", "--prompt", "ma"]) == 0
    result = _last_json(capsys)
    assert len(result["samples"]) == 6 and 0 <= result["novel_fraction"] <= 1
    assert all(s.startswith("ma") and s.isalpha() for s in result["samples"])


def test_train_on_a_text_file_with_bpe(tmp_path, capsys):
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(f"the {w} sat on the mat" for w in ("cat", "dog", "cow")) * 30)
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "names", "--data", str(text), "--tokenizer", "bpe",
                     "--vocab-size", "300", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    summary = _last_json(capsys)
    assert summary["steps"] == 3
    config = json.loads((out / "checkpoints" / "step-00000003" / "config.json").read_text())
    assert config["meta"]["tokenizer"]["kind"] == "bpe"
    assert cli.main(["sample", "--ckpt", str(out), "-n", "2"]) == 0
    assert len(_last_json(capsys)["samples"]) == 2


def test_bad_arguments(tmp_path, capsys):
    assert cli.main(["train", "--preset", "gpt-5", "--steps", "1"]) == 2
    assert "gpt-5" in capsys.readouterr().err
    assert cli.main(["train", "--preset", "names", "--data", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err
    assert cli.main(["sample", "--ckpt", str(tmp_path)]) == 2
    assert "written by gptcore train" in capsys.readouterr().err
