"""`gptcore train --preset names-diffusion`, `gptcore sample` on its checkpoint and `gptcore compare`,
run in-process for a few steps."""
import contextlib
import io
import json

import pytest
import torch

from gptcore import cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("ckpts")
    outputs = {}
    for preset in ("names", "names-diffusion"):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert cli.main(["train", "--preset", preset, "--steps", "3", "--quiet",
                             "--out", str(root / preset)]) == 0
        outputs[preset] = json.loads(buffer.getvalue().strip().splitlines()[-1])
    torch.set_num_threads(threads)
    return root, outputs


def test_train_prints_the_model_json_plus_the_bound(checkpoints):
    _, outputs = checkpoints
    ar, diff = outputs["names"], outputs["names-diffusion"]
    assert set(ar) - {"val_nll_bound", "val_nll_bound_stderr"} <= set(diff)
    assert diff["preset"] == "names-diffusion" and diff["steps"] == 3
    assert diff["val_nll_bound"] > 0 and diff["val_nll_bound_stderr"] > 0


def test_sample_detects_a_diffusion_checkpoint(checkpoints, capsys):
    root, _ = checkpoints
    assert cli.main(["sample", "--ckpt", str(root / "names-diffusion"), "-n", "4", "--steps", "8",
                     "--block-length", "8", "--temperature", "1.0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps"] == 8 and len(result["samples"]) == 4
    # the AR checkpoint still goes through the autoregressive sampler (no diffusion keys)
    assert cli.main(["sample", "--ckpt", str(root / "names"), "-n", "2"]) == 0
    assert "steps" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sample_refuses_the_other_samplers_options(checkpoints, capsys):
    """Each option belongs to one sampler; given to the other it is an error, not ignored."""
    root, _ = checkpoints
    assert cli.main(["sample", "--ckpt", str(root / "names"), "--steps", "4"]) == 2
    assert "--steps: expected no value for an autoregressive checkpoint" in \
        capsys.readouterr().err
    assert cli.main(["sample", "--ckpt", str(root / "names-diffusion"),
                     "--max-new-tokens", "4"]) == 2
    assert "--max-new-tokens: expected no value for a diffusion checkpoint" in \
        capsys.readouterr().err


def test_sample_rejects_a_schedule_that_does_not_fit(checkpoints, capsys):
    root, _ = checkpoints
    assert cli.main(["sample", "--ckpt", str(root / "names-diffusion"), "--block-length", "5"]) == 2
    assert "block_length" in capsys.readouterr().err


def test_compare_prints_the_table_and_rows(checkpoints, capsys):
    root, _ = checkpoints
    assert cli.main(["compare", "--ar", str(root / "names"), "--diffusion",
                     str(root / "names-diffusion"), "-n", "12"]) == 0
    out = capsys.readouterr().out
    assert "exact" in out and "<=" in out
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    assert [r["nll_kind"] for r in rows] == ["exact", "bound"]
    assert all(len(r["samples"]) == 10 and 0 <= r["valid_novel"] <= 1 for r in rows)


def test_compare_rejects_swapped_checkpoints(checkpoints, capsys):
    root, _ = checkpoints
    assert cli.main(["compare", "--ar", str(root / "names-diffusion"), "--diffusion",
                     str(root / "names")]) == 2
    assert "diffusion checkpoint" in capsys.readouterr().err
