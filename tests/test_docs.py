"""The examples in README.md and docs/ run as written: every fenced block marked `python` is
executed, each in a process of its own, so none can change what later tests see (the ISA
level, a forced backend, an SDPA override); blocks marked `py` are signature listings. Code
comments that point to docs/cpu-isa.md's "Measurements behind the code" find their file there."""
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


MEASUREMENTS = "## Measurements behind the code"
CITATION = re.compile(r'docs/cpu-isa\.md, "Measurements behind the\W+code"')


def test_measurements_cited_in_code_are_in_the_docs():
    text = (ROOT / "docs" / "cpu-isa.md").read_text()
    section = text.split(MEASUREMENTS, 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([^`]+)`", section, re.M))
    citing = {str(path.relative_to(ROOT))
              for folder in ("csrc", "gptcore", "tests", "bench")
              for path in (ROOT / folder).rglob("*")
              if path.suffix in (".cpp", ".h", ".py") and CITATION.search(path.read_text())}
    assert citing, "no code comment cites the section: the pattern is out of date"
    assert citing <= listed, f"cited but not listed in docs/cpu-isa.md: {sorted(citing - listed)}"
    missing = sorted(name for name in listed if not (ROOT / name).exists())
    assert not missing, f"listed in docs/cpu-isa.md but not in the repository: {missing}"
