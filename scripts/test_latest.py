"""`make test-latest`: the whole suite in a venv holding the newest release of every package, and
one line saying what changed upstream and what broke. The exit status is pytest's.

Run by the Makefile after it has made .venv-latest; pytest arguments pass through.
"""
import collections
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pinned():
    """{normalised name: version} from constraints.txt."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def moved(pins):
    """'name old -> new' for every installed package whose version differs from its pin."""
    installed = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return [f"{name} {pins[name]} -> {installed[name]}" for name in sorted(pins)
            if name in installed and installed[name].split("+")[0] != pins[name].split("+")[0]]


def outcome(report):
    """(counts, failures by file, first failure message) from a junit XML report."""
    counts, by_file, first = collections.Counter(), collections.Counter(), None
    for case in ET.parse(report).getroot().iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            counts["failed"] += 1
            parts = case.get("classname", "").split(".")   # tests.test_x[.TestClass]
            by_file[next((p for p in parts if p.startswith("test_")), parts[0]) + ".py"] += 1
            first = first or (bad.get("message") or "").splitlines()[0][:160]
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, by_file, first


def main():
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        start = time.time()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={report}",
                              *sys.argv[1:]], cwd=REPO)
        seconds = time.time() - start
        counts, by_file, first = outcome(report) if report.exists() else ({}, {}, None)
    changes = moved(pinned())
    line = (f"test-latest: {counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
            f"{counts.get('skipped', 0)} skipped in {seconds:.0f} s; ")
    line += ("newer than constraints.txt: " + ", ".join(changes)) if changes else \
        "every package at its constraints.txt version"
    if run.returncode not in (0, 1):
        line += f"; pytest exited {run.returncode} (collection or usage error: see above)"
    if by_file:
        line += "; failing: " + ", ".join(f"{f} ({n})" for f, n in by_file.most_common())
        line += f"; first: {first}"
    print(line)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
