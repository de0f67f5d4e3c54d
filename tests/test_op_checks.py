"""Direct torch.ops.gptcore.* calls with bad arguments raise a Python exception on every backend
(calls in tests/bad_op_calls.py, run in a child process so that a crash fails the test), and the
C++ checks (csrc/common/checks.h) raise the same exception type as the op's spec for each call."""
import functools
import subprocess
import sys
from pathlib import Path

import pytest

import gptcore

SCRIPT = Path(__file__).with_name("bad_op_calls.py")
PREFIXES = {"cpp": "", "triton": "triton_", "ref": "ref_"}


@functools.lru_cache(maxsize=None)
def run_bad_calls(backend):
    """(exit status, stdout lines, stderr) of bad_op_calls.py for one backend."""
    assert gptcore.available_backends()[backend], f"backend {backend} is not available"
    child = subprocess.run([sys.executable, str(SCRIPT), PREFIXES[backend]], capture_output=True,
                           text=True, timeout=600)
    return child.returncode, tuple(child.stdout.splitlines()), child.stderr


def exception_types(lines):
    """{call label: exception type name} from the child's `ok <label>: <Type>: <message>` lines."""
    return {ln.split()[1].rstrip(":"): ln.split()[2].rstrip(":") for ln in lines
            if ln.startswith("ok ")}


@pytest.mark.parametrize("backend", PREFIXES)
def test_direct_op_calls_with_bad_arguments_raise(backend):
    code, lines, stderr = run_bad_calls(backend)
    running = next((ln.split()[1] for ln in reversed(lines) if ln.split()[0] in ("start", "good")),
                   None)
    assert code == 0 and lines[-1:] == ("done",), (
        f"the child failed (exit {code}) in {running}:\n{stderr[-2000:]}")
    failed = [ln for ln in lines if ln.startswith("fail")]
    assert not failed, failed
    checked = sum(ln.startswith("ok") for ln in lines)
    assert checked >= 20, f"only {checked} bad calls ran for backend {backend!r}"


def test_cpp_checks_raise_what_the_specs_raise():
    cpp, spec = (exception_types(run_bad_calls(b)[1]) for b in ("cpp", "ref"))
    shared = cpp.keys() & spec.keys()
    assert len(shared) >= 60, f"only {len(shared)} calls ran on both backends"
    differ = {label: (cpp[label], spec[label]) for label in shared if cpp[label] != spec[label]}
    assert not differ, f"C++ vs spec exception types: {differ}"
