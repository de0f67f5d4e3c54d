"""The examples in README.md and docs/ run as written: every fenced block marked `python` is
executed, each in a process of its own, so none can change what later tests see (the ISA
level, a forced backend, an SDPA override); blocks marked `py` are signature listings."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _examples():
    for path in DOCS:
        text = path.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[:match.start()].count("\n") + 1
            yield pytest.param(match.group(1), id=f"{path.name}:{line}")


@pytest.mark.parametrize("code", list(_examples()))
def test_example_runs(code):
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
