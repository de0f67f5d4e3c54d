"""README's measured figures are generated from committed results files (bench/readme_tables.py,
bench/record.py): the blocks must match their files, and the machinery must catch an edit."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_readme_blocks_match_their_results_files():
    run = subprocess.run([sys.executable, str(BENCH / "readme_tables.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_results_file_is_named_by_kind_and_stamp():
    tables = _load("readme_tables")
    files = sorted((BENCH / "results").glob("*.json"))
    assert files
    for path in files:
        assert tables.kind_of(path.name)      # raises on a name without kind and stamp


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A results directory holding one bench/record.py run of a tiny command."""
    record = _load("record")
    command = [sys.executable, "-c", "print('step 1'); print('{\"val_loss\": 1.5, \"steps\": 7}')"]
    status, path = record.record("train-tiny", command, directory=tmp_path)
    assert status == 0
    tables = _load("readme_tables")
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    return tables, path


def test_record_keeps_the_command_output_and_its_json_summary(recorded):
    _, path = recorded
    data = json.loads(path.read_text())
    assert data["stdout"] == 'step 1\n{"val_loss": 1.5, "steps": 7}\n'
    assert data["result"] == {"val_loss": 1.5, "steps": 7}
    assert data["returncode"] == 0 and data["environment"]["commit"]


def test_a_block_is_regenerated_from_its_file_and_an_edit_is_caught(recorded):
    tables, path = recorded
    text = f"intro\n<!-- results: {path.name} -->\nold text\n<!-- end results -->\noutro\n"
    new, stale = tables.render(text, refresh=False)
    assert stale == []
    body = new.split(f"<!-- results: {path.name} -->\n")[1].split("<!-- end results -->")[0]
    row = next(line for line in body.splitlines() if line.startswith("| `"))
    assert row.endswith("| 7 | - | - | - | - | 1.500 |"), row   # steps 7, val loss 1.5
    assert new.startswith("intro\n") and new.endswith("outro\n")
    edited = new.replace("1.500", "1.400")
    assert tables.render(edited, refresh=False)[0] != edited   # --check would fail


def test_a_newer_file_of_the_same_kind_makes_the_block_stale(recorded):
    tables, path = recorded
    newer = path.with_name("train-tiny-29991231-235959.json")
    newer.write_text(path.read_text())
    text = f"<!-- results: {path.name} -->\n<!-- end results -->"
    _, stale = tables.render(text, refresh=False)
    assert stale == [path.name]
    refreshed, _ = tables.render(text, refresh=True)
    assert newer.name in refreshed and path.name not in refreshed
