"""`gptcore train` in the stream data mode and with the model and recipe set from the command
line or a --config file, in-process and short."""
import json

import pytest
import torch

from gptcore import cli
from gptcore.training import recipes

TINY = ["--n-layer", "1", "--d-model", "32", "--n-head", "2", "--d-ff", "64",
        "--block-size", "16", "--batch-size", "4", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("To be, or not to be, that is the question:\n" * 40)
    return path


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _config(run):
    newest = sorted((run / "checkpoints").iterdir())[-1]
    return json.loads((newest / "config.json").read_text())


def test_shakespeare_char_is_nanogpts_cpu_recipe():
    recipe = recipes.RECIPES["shakespeare-char"]
    assert (recipe.steps, recipe.batch_size, recipe.lr, recipe.warmup) == (2000, 12, 1e-3, 100)
    assert (recipe.betas, recipe.weight_decay, recipe.lr * recipe.min_lr_ratio) == \
        ((0.9, 0.99), 0.1, pytest.approx(1e-4, rel=1e-12))    # min lr 1e-4 up to rounding
    config = recipes.GPTConfig.preset("shakespeare-char")
    assert (config.block_size, config.n_layer, config.n_head, config.d_model) == (64, 4, 4, 128)
    gpu = recipes.GPTConfig.preset("shakespeare-char-gpu")
    assert (gpu.block_size, gpu.n_layer, gpu.n_head, gpu.d_model) == (256, 6, 6, 384)
    assert recipes.data_source(type("A", (), {"preset": "shakespeare-char"})()) == \
        ("tinyshakespeare", "stream")


def test_stream_training_with_overrides_caches_and_resumes(book, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "shakespeare-char", "--data", str(book), "--out", str(run),
            *TINY]
    assert cli.main([*argv, "--steps", "3"]) == 0
    assert _last_json(capsys)["steps"] == 3
    payload = _config(run)
    config, meta = payload["config"], payload["meta"]
    assert (config["n_layer"], config["d_model"], config["n_head"], config["block_size"]) == \
        (1, 32, 2, 16)
    assert config["vocab_size"] == len(set(book.read_text())) + 1
    assert meta["data_mode"] == "stream" and meta["data"] == str(book)
    assert len(list((run / "data").iterdir())) == 1
    assert cli.main([*argv, "--steps", "5"]) == 0                # resumes at step 3
    summary = _last_json(capsys)
    assert summary["steps"] == 5 and summary["tokens"] == 5 * 4 * 16
    assert cli.main([*argv[:-len(TINY)], *TINY[2:], "--n-layer", "2", "--steps", "6"]) == 2
    assert "n_layer=2, got config.n_layer=1" in capsys.readouterr().err


def test_names_presets_stream_a_file_on_request(book, tmp_path, capsys):
    assert cli.main(["train", "--preset", "names", "--data", str(book), "--data-mode",
                     "stream", "--steps", "2", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert _last_json(capsys)["tokens"] == 2 * 64 * 32       # names: batch 64, block 32
    assert _config(tmp_path / "r")["meta"]["data_mode"] == "stream"


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"model": {"n_layer": 2, "mlp": "gelu"}, "train": {"lr": 0.002, '
              '"betas": [0.8, 0.9]}, "d_model": 48}'),
    (".toml", 'd_model = 48\n[model]\nn_layer = 2\nmlp = "gelu"\n[train]\nlr = 0.002\n'
              'betas = [0.8, 0.9]\n'),
])
def test_config_file_then_options(book, tmp_path, capsys, suffix, text, monkeypatch):
    config_file = tmp_path / f"model{suffix}"
    config_file.write_text(text)
    seen = {}
    real_train = recipes.train

    def spy(model, batches, recipe, **kwargs):
        seen.update(lr=recipe.lr, betas=recipe.betas)
        return real_train(model, batches, recipe, **kwargs)
    monkeypatch.setattr(recipes, "train", spy)
    run = tmp_path / "run"
    argv = ["train", "--preset", "shakespeare-char", "--data", str(book), "--config",
            str(config_file), "--block-size", "16", "--n-layer", "3", "--steps", "1",
            "--threads", "1", "--out", str(run), "--quiet"]
    assert cli.main(argv) == 0
    config = _config(run)["config"]
    # the file over the preset, the options over the file
    assert (config["d_model"], config["mlp"], config["n_layer"]) == (48, "gelu", 3)
    assert seen["lr"] == 0.002 and seen["betas"] == (0.8, 0.9)


@pytest.mark.parametrize("line, expected", [
    ("--n-layer 0", "argument --n-layer: expected an integer >= 1, got '0'"),
    ("--mlp tanh", "argument --mlp: invalid choice: 'tanh'"),
    ("--lr -1", "argument --lr: expected a number > 0, got '-1'"),
    ("--tie-embeddings maybe", "argument --tie-embeddings: expected true or false"),
])
def test_argparse_rejects_bad_values(line, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--preset", "shakespeare-char", *line.split()])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gptcore train: error: ") and expected in err[-1], err


@pytest.mark.parametrize("setup, line, expected", [
    (None, "--preset names --data-mode stream", "--data: expected a text file or directory "
                                               "for --data-mode stream, got none"),
    (None, "--preset names-diffusion --n-layer 2", "--n-layer: expected a GPT preset"),
    (None, "--preset shakespeare-char --config {tmp}/none.toml", "--config: expected a JSON "
                                                                 "or TOML file"),
    ("x.json:{\"n_layers\": 2}", "--preset shakespeare-char --config {tmp}/x.json",
     "--config: expected fields among"),
    ("x.toml:n_layer = 0", "--preset shakespeare-char --config {tmp}/x.toml",
     "--config: expected a valid n_layer"),
    ("x.toml:n_layer = ", "--preset shakespeare-char --config {tmp}/x.toml",
     "--config: expected TOML"),
    (None, "--preset shakespeare-char --data {tmp}/none.txt", "--data: expected a text file"),
])
def test_own_checks_reject(tmp_path, capsys, setup, line, expected):
    if setup:
        name, text = setup.split(":", 1)
        (tmp_path / name).write_text(text)
    assert cli.main(["train", *line.format(tmp=tmp_path).split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gptcore train: ") and expected in err[0], err
