"""No name that Python can import from a checkout shadows an installed distribution's module.

From the repository root (pytest, `python -m`, a notebook started there) the root is first on
sys.path, and pytest puts tests/ there too (test_readme.py adds bench/): a folder or module there
named like an installed package's top-level module wins over the package. A top-level
`kernels/` did exactly that to Hugging Face's `kernels`, which transformers imports to build any
model. Folders without an __init__.py are namespace portions, which never win over a regular
package or module, so tests/, bench/ and scripts/ stay without one.
"""
import importlib.metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATH_DIRS = ("tests", "bench")   # folders whose modules are imported by bare name


def installed_modules():
    """{top-level module name: [distributions]} of everything installed except gptcore itself."""
    return {name: dists for name, dists in importlib.metadata.packages_distributions().items()
            if set(dists) != {"gptcore"}}


def importable_names(folder):
    """The module names a folder on sys.path offers: its packages and .py modules."""
    names = {p.stem for p in folder.glob("*.py")}
    names |= {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def clashes(folder, installed):
    return {name: installed[name] for name in sorted(importable_names(folder)) if name in installed}


def test_root_names_shadow_no_installed_module():
    assert (ROOT / "gptcore" / "__init__.py").exists()
    assert clashes(ROOT, installed_modules()) == {}


@pytest.mark.parametrize("folder", PATH_DIRS)
def test_helper_modules_on_sys_path_shadow_no_installed_module(folder):
    assert clashes(ROOT / folder, installed_modules()) == {}


@pytest.mark.parametrize("folder", ("tests", "bench", "scripts"))
def test_support_folders_are_namespace_portions(folder):
    assert not (ROOT / folder / "__init__.py").exists()


def test_the_check_finds_a_clash(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "torch.py").write_text("")
    found = clashes(tmp_path, {"kernels": ["kernels"], "torch": ["torch"], "numpy": ["numpy"]})
    assert found == {"kernels": ["kernels"], "torch": ["torch"]}
