"""Zero-size inputs on every backend, forward and backward (cases in tests/zero_size_cases.py).

Each backend's cases run in one child process: a crash (today's SIGFPE on an empty batch) is a
failed test naming the case, not a dead test session."""
import subprocess
import sys
from pathlib import Path

import pytest

import gptcore
from zero_size_cases import CASES

SCRIPT = Path(__file__).with_name("zero_size_cases.py")


def run_cases(backend):
    """{case: "ok" | error} for every case, and the case a crashed child was running."""
    child = subprocess.run([sys.executable, str(SCRIPT), backend], capture_output=True, text=True,
                           timeout=600)
    results, running = {}, None
    for line in child.stdout.splitlines():
        status, _, rest = line.partition(" ")
        name, _, error = rest.partition(": ")
        if status == "start":
            running = name
        else:
            results[name] = "ok" if status == "ok" else error
            running = None
    return child, results, running


@pytest.mark.parametrize("backend", ["ref", "cpp", "triton"])
def test_zero_size_inputs(backend):
    if not gptcore.available_backends()[backend]:
        pytest.fail(f"backend {backend} is not available; the zero-size cases need it")
    child, results, running = run_cases(backend)
    assert child.returncode == 0, (f"the child died (exit {child.returncode}) in case {running}:\n"
                                   f"{child.stderr[-2000:]}")
    failed = {name: err for name, err in results.items() if err != "ok"}
    assert not failed, failed
    assert set(results) == set(CASES), f"cases that did not run: {set(CASES) - set(results)}"
