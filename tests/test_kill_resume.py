"""kill -9 anywhere, then resume: a real `gptcore train --preset names` process is killed with
SIGKILL again and again (during start-up, during steps, during checkpoint saves), each time
resumed with the same command; after every kill each checkpoint on disk is complete (its
manifest verifies), and the run ends bit-identical to an uninterrupted one (one thread each).
The short version runs in `make test`; the 20-kill version is marked slow (run it with
`pytest -m slow tests/test_kill_resume.py`)."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from gptcore.training import atomic, checkpoint

EVERY = 3            # a checkpoint every 3 steps: saves are a good share of the run's time


def _command(out, steps):
    return [sys.executable, "-m", "gptcore", "train", "--preset", "names", "--steps", str(steps),
            "--checkpoint-every", str(EVERY), "--threads", "1", "--quiet", "--out", str(out)]


def _staging(out):
    """{(name, inode, ctime)} of the staging directories in out: a save under way, or one
    that a kill interrupted (the next save removes it). A save that reuses a leftover's name
    makes a new directory, told apart by inode and ctime."""
    try:
        with os.scandir(out / "checkpoints") as entries:
            return {(e.name, e.inode(), e.stat().st_ctime_ns) for e in entries
                    if e.name.startswith(atomic.TMP_PREFIX)}
    except FileNotFoundError:
        return set()


def _saving(out, before=frozenset()):
    """Whether a save has begun that was not under way when `before` was taken."""
    return bool(_staging(out) - before)


def _wait_for_a_save(proc, out, deadline, before):
    while not _saving(out, before) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0002)


def _kill(proc, out, mode, rng):
    """SIGKILLs proc at a point chosen by mode: "start-up" (a random time after launch,
    usually while importing or loading the checkpoint), "step" (a random time into training),
    "save" (the moment a checkpoint's staging directory appears)."""
    deadline, leftovers = time.monotonic() + 60, _staging(out)
    if mode == "start-up":
        time.sleep(rng.uniform(0.0, 2.5))
    else:
        _wait_for_a_save(proc, out, deadline, leftovers)      # training has started
        if mode == "step":
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            current = _staging(out)
            while _staging(out) & current and proc.poll() is None:   # this save ends ...
                time.sleep(0.0002)
            _wait_for_a_save(proc, out, deadline, current)        # ... and the next begins
    proc.kill()
    proc.wait()
    return _saving(out, leftovers)


def _newest_state(out):
    found = checkpoint.checkpoints(out)
    return json.loads((found[-1] / "state.json").read_text()) if found else None


def _kill_loop(tmp_path, kills, steps, seed):
    reference = tmp_path / "uninterrupted"
    subprocess.run(_command(reference, steps), check=True, capture_output=True)
    out, rng = tmp_path / "killed", random.Random(seed)
    modes = ["step", "save", "start-up"]
    landed = {"during a save": 0, "elsewhere": 0, "after the end": 0}
    for i in range(kills):
        proc = subprocess.Popen(_command(out, steps), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        mid_save = _kill(proc, out, modes[i % len(modes)], rng)
        if proc.returncode == 0:
            landed["after the end"] += 1
        else:
            landed["during a save" if mid_save else "elsewhere"] += 1
        for found in checkpoint.checkpoints(out):    # a kill never leaves a partial checkpoint
            atomic.verify(found)
    subprocess.run(_command(out, steps), check=True, capture_output=True)
    print(f"{kills} kills: {landed}")
    assert landed["during a save"] >= 1 and landed["elsewhere"] >= 1, landed
    assert landed["after the end"] == 0, landed       # every kill interrupted the run
    want, got = _newest_state(reference), _newest_state(out)
    assert got["step"] == want["step"] == steps
    assert got["history"]["train_losses"] == want["history"]["train_losses"]
    assert got["history"]["val_losses"] == want["history"]["val_losses"]
    a, _ = checkpoint.load_model(reference)
    b, _ = checkpoint.load_model(out)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_three_kills_then_resume_is_exact(tmp_path):
    _kill_loop(tmp_path, kills=3, steps=45, seed=0)


@pytest.mark.slow
def test_twenty_kills_then_resume_is_exact(tmp_path):
    _kill_loop(tmp_path, kills=20, steps=240, seed=1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_exits_128_plus_signal(tmp_path, signum):
    """SIGTERM/SIGINT to a real `gptcore train` during training: one line on stderr, exit
    128 + the signal, and the newest checkpoint is the step it stopped at."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out, 10_000), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_a_save(proc, out, time.monotonic() + 60, frozenset())
    time.sleep(0.3)                                    # some steps past the first save
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    stopped = int(re.search(rf"stopped by {signal.Signals(signum).name} at step (\d+); "
                            rf"checkpoint \S+ \(the same command resumes\)$", err.strip())[1])
    assert _newest_state(out)["step"] == stopped >= EVERY
