"""Direct torch.ops.gptcore.* calls with bad arguments raise a Python exception on every backend
(calls in tests/bad_op_calls.py, run in a child process so that a crash fails the test)."""
import subprocess
import sys
from pathlib import Path

import pytest

import gptcore

SCRIPT = Path(__file__).with_name("bad_op_calls.py")


@pytest.mark.parametrize("backend,prefix", [("cpp", ""), ("triton", "triton_"), ("ref", "ref_")])
def test_direct_op_calls_with_bad_arguments_raise(backend, prefix):
    assert gptcore.available_backends()[backend], f"backend {backend} is not available"
    child = subprocess.run([sys.executable, str(SCRIPT), prefix], capture_output=True, text=True,
                           timeout=600)
    lines = child.stdout.splitlines()
    running = next((ln.split()[1] for ln in reversed(lines) if ln.split()[0] in ("start", "good")),
                   None)
    assert child.returncode == 0 and lines[-1:] == ["done"], (
        f"the child failed (exit {child.returncode}) in {running}:\n{child.stderr[-2000:]}")
    failed = [ln for ln in lines if ln.startswith("fail")]
    assert not failed, failed
    checked = sum(ln.startswith("ok") for ln in lines)
    assert checked >= 20, f"only {checked} bad calls ran for prefix {prefix!r}"
