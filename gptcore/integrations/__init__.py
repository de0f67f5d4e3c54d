"""Integrations with other libraries. Hugging Face transformers learns the name "gptcore" as
soon as both packages are imported, in either order, without gptcore importing transformers
itself (that would add about 0.9 s to `import gptcore`)."""
import importlib.abc
import importlib.util
import sys
import warnings

from gptcore.integrations import hf
from gptcore.integrations.hf import patch, unpatch


def _register_hf():
    try:
        hf.register()
    except (ImportError, AttributeError) as err:
        warnings.warn(f"gptcore: this transformers version has no attention/experts interface "
                      f"to register with ({err}); attn_implementation='gptcore' is unavailable.")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds `transformers` like the other finders would, and registers gptcore once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                _register_hf()
            spec.loader.exec_module = exec_module
        return spec


def install():
    if "transformers" in sys.modules:
        _register_hf()
    elif importlib.util.find_spec("transformers") is not None:
        sys.meta_path.insert(0, _RegisterAfterImport())


__all__ = ["install", "patch", "unpatch"]
