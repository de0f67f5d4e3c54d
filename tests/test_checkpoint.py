"""gptcore.training.checkpoint and atomic: the run directory's layout, --keep, the manifest
verified on load (a clear error naming the bad file), a full disk or read-only directory
leaving the previous checkpoint intact, config changes refused on resume, periodic and
signal-triggered checkpoints, and exact resume with the RNG streams in play."""
import dataclasses
import errno
import json
import os
import random
import shutil
import signal

import pytest
import torch

from gptcore import GPT, GPTConfig
from gptcore.training import atomic, checkpoint, data, stop
from gptcore.training import rng
from gptcore.training.config import TrainConfig
from gptcore.training.objective import Objective, next_token
from gptcore.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: tests/conftest.py
CONFIG = dict(n_layer=1, d_model=32)


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("names", **CONFIG))


def _seqs():
    tok = data.CharTokenizer.names()
    return data.encode_documents(data.load_names()[:400], tok, 16)


def _steps(run):
    return [json.loads((c / "state.json").read_text())["step"]
            for c in checkpoint.checkpoints(run)]


def test_layout_round_trip_and_keep(tmp_path):
    model = _model()
    for step in (3, 6, 9):
        path = checkpoint.save(tmp_path, model, state={"step": step}, keep=2)
    assert path == tmp_path / "checkpoints" / "step-00000009"
    assert _steps(tmp_path) == [6, 9]                      # the newest two
    manifest = json.loads((path / atomic.MANIFEST).read_text())["files"]
    assert set(manifest) == {"model.safetensors", "config.json", "state.json"}
    assert manifest["config.json"]["size"] == (path / "config.json").stat().st_size
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    # the same step saved twice: a new directory, and the newer one is the run's checkpoint
    again = checkpoint.save(tmp_path, model, state={"step": 9, "tag": "later"}, keep=None)
    assert again.name == "step-00000009-2"
    assert checkpoint.resolve(tmp_path) == again
    loaded, meta = checkpoint.load_model(tmp_path)
    assert meta == {}
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # one checkpoint directory is accepted on its own too
    assert checkpoint.resolve(tmp_path / "checkpoints" / "step-00000006").name == "step-00000006"
    # once the first of them is pruned, a third save still sorts newest
    checkpoint.save(tmp_path, model, state={"step": 9}, keep=1)
    assert [c.name for c in checkpoint.checkpoints(tmp_path)] == ["step-00000009-3"]


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "bytes"),
    (lambda p: p.write_bytes(b"\0" + p.read_bytes()[1:]), "sha256"),
    (lambda p: p.unlink(), "missing"),
])
def test_damaged_file_is_named(tmp_path, damage, expected):
    path = checkpoint.save(tmp_path, _model(), state={"step": 1})
    damage(path / "model.safetensors")
    with pytest.raises(atomic.DamagedError, match=expected) as err:
        checkpoint.load_model(tmp_path)
    assert "model.safetensors" in str(err.value) and str(err.value).startswith("ckpt:")


def test_partial_and_foreign_directories(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        checkpoint.resolve(tmp_path / "nothing")
    with pytest.raises(ValueError, match="written by gptcore train"):
        checkpoint.resolve(tmp_path)
    # what a kill during the first save leaves: only a staging directory
    tmp, _ = checkpoint.begin(tmp_path, 5)
    (tmp / "model.safetensors").write_bytes(b"half")
    with pytest.raises(ValueError, match="unfinished"):
        checkpoint.resolve(tmp_path)
    # a checkpoint directory without its manifest (copied by hand, or an older format)
    path = checkpoint.save(tmp_path, _model(), state={"step": 1})
    assert not tmp.exists()                                # the next save removed the leftover
    (path / atomic.MANIFEST).unlink()
    with pytest.raises(ValueError, match="manifest"):
        checkpoint.resolve(path)
    # another model kind
    path = checkpoint.save(tmp_path / "other", torch.nn.Linear(2, 2), state={"step": 1})
    with pytest.raises(ValueError, match="expected a checkpoint of a GPT, got one of 'Linear'"):
        checkpoint.load_model(tmp_path / "other")


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("fail_at", [0, 2])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error, fail_at):
    """A full disk or a read-only directory, simulated in the one function that writes bytes:
    the save fails with one clear error and the previous checkpoint still loads."""
    model = _model()
    checkpoint.save(tmp_path, model, state={"step": 1}, keep=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    calls, write = [], atomic.write_file

    def failing(path, data_):
        calls.append(path)
        if len(calls) > fail_at:
            raise OSError(error, os.strerror(error), str(path))
        write(path, data_)
    monkeypatch.setattr(atomic, "write_file", failing)
    with pytest.raises(checkpoint.WriteError) as err:
        checkpoint.save(tmp_path, model, state={"step": 2}, keep=1)
    assert os.strerror(error) in str(err.value) and "step-00000001 is intact" in str(err.value)
    assert _steps(tmp_path) == [1]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    loaded, _ = checkpoint.load_model(tmp_path)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_resume_refuses_a_different_config(tmp_path):
    kwargs = dict(progress=False, out_dir=tmp_path)
    recipe = TrainConfig(steps=2)
    train(_model(), data.Batches(_seqs(), 4), recipe, meta={"preset": "names"}, **kwargs)
    bigger = GPT(GPTConfig.preset("names", n_layer=2, d_model=32))
    with pytest.raises(ValueError, match=r"config\.n_layer=2, got config\.n_layer=1"):
        train(bigger, data.Batches(_seqs(), 4), recipe, meta={"preset": "names"}, **kwargs)
    with pytest.raises(ValueError, match=r'meta\.preset="x", got meta\.preset="names"'):
        train(_model(), data.Batches(_seqs(), 4), recipe, meta={"preset": "x"}, **kwargs)


def _noisy_loss(model, batch):
    """The next-token loss scaled by draws from torch's and Python's generators, so that the
    weights depend on both streams (as a diffusion model's masks do)."""
    return next_token(model, batch) * (1 + 0.5 * torch.rand(()) + 0.1 * random.random())


def test_sigterm_saves_then_resume_is_exact(tmp_path):
    """SIGTERM after step 5 of 12: a checkpoint of step 5, Interrupted(SIGTERM); the resumed run
    ends bit-identical to an uninterrupted one, the RNG streams included."""
    recipe = TrainConfig(steps=12, lr=3e-3, warmup=3, seed=0, keep=None)
    noisy = Objective(_noisy_loss)
    straight = _model()
    train(straight, data.Batches(_seqs(), 8), recipe, objective=noisy, progress=False)
    calls = []

    def signalled(model, batch):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)      # noted; the step still finishes
        return _noisy_loss(model, batch)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(stop.Interrupted) as err, stop.requests():
        train(_model(), data.Batches(_seqs(), 8), dataclasses.replace(recipe, checkpoint_every=2),
              objective=Objective(signalled), out_dir=tmp_path, progress=False)
    assert signal.getsignal(signal.SIGTERM) is previous        # handlers restored
    assert (err.value.signum, err.value.step) == (signal.SIGTERM, 5)
    assert err.value.checkpoint == checkpoint.resolve(tmp_path)
    assert _steps(tmp_path) == [2, 4, 5]
    resumed = _model(seed=1)                 # another init: everything comes from the checkpoint
    summary = train(resumed, data.Batches(_seqs(), 8), recipe, objective=noisy,
                    out_dir=tmp_path, progress=False)
    assert summary["steps"] == 12
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_without_rng_state_would_differ(tmp_path):
    """The control for the test above: dropping the saved RNG state changes the result, so
    that test can fail."""
    recipe, noisy = TrainConfig(steps=6, lr=3e-3, seed=0), Objective(_noisy_loss)
    straight = _model()
    train(straight, data.Batches(_seqs(), 8), recipe, objective=noisy, progress=False)
    train(_model(), data.Batches(_seqs(), 8), TrainConfig(steps=3, lr=3e-3, seed=0),
          objective=noisy, out_dir=tmp_path, progress=False)
    ckpt = checkpoint.resolve(tmp_path)
    state = json.loads((ckpt / "state.json").read_text())
    torch.manual_seed(123)
    state["rng"]["torch"] = rng.get_state()["torch"]
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "checkpoints", copy / "checkpoints")
    target = checkpoint.resolve(copy)
    (target / "state.json").write_text(json.dumps(state))
    (target / atomic.MANIFEST).unlink()
    atomic.commit(*_restage(target))
    resumed = _model()
    train(resumed, data.Batches(_seqs(), 8), recipe, objective=noisy, out_dir=copy,
          progress=False)
    assert any(not torch.equal(a, b) for a, b in
               zip(straight.state_dict().values(), resumed.state_dict().values()))


def _restage(directory):
    """(staging directory holding directory's files, directory): re-commits edited files."""
    tmp = directory.with_name(atomic.TMP_PREFIX + directory.name)
    os.rename(directory, tmp)
    return tmp, directory


def test_checkpoint_minutes(tmp_path):
    """A time-triggered checkpoint at every step when the interval is tiny."""
    train(_model(), data.Batches(_seqs(), 4), TrainConfig(steps=4, checkpoint_minutes=1e-9,
                                                          keep=None),
          progress=False, out_dir=tmp_path)
    assert _steps(tmp_path) == [1, 2, 3, 4]


def test_cli_disk_full_is_one_line(tmp_path, monkeypatch, capsys):
    """gptcore train whose second checkpoint meets a full disk: exit 1, one line saying the
    first checkpoint is intact, and that checkpoint still loads."""
    from gptcore import cli
    calls, write = [], atomic.write_file

    def full_after_the_first_save(path, data_):
        calls.append(path)
        if len(calls) > 5:     # the first save: model, config, optimizer, state, manifest
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, data_)
    monkeypatch.setattr(atomic, "write_file", full_after_the_first_save)
    threads = torch.get_num_threads()
    code = cli.main(["train", "--preset", "microgpt", "--steps", "6", "--checkpoint-every", "2",
                     "--quiet", "--out", str(tmp_path)])
    torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("gptcore train: --out: could not write a checkpoint"), err
    assert "No space left on device" in err[0] and "step-00000002 is intact" in err[0], err
    assert _steps(tmp_path) == [2]
    checkpoint.load_model(tmp_path)
