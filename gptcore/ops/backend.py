"""Backend selection: which implementation (Triton, C++ extension, reference) serves a call.

`auto` (the default): CUDA tensors -> Triton, CPU tensors -> C++; whatever is missing falls
back to the reference with one warning per op and device per process. A forced backend that
cannot serve a call raises RuntimeError saying why.
"""
import contextlib
import functools
import importlib
import importlib.util
import os
import warnings

import torch

from gptcore.ops.spec import has_op

BACKENDS = ("ref", "cpp", "triton")
_CHOICES = BACKENDS + ("auto",)
_PREFIX = {"ref": "ref_", "cpp": "", "triton": "triton_"}
_forced = []          # stack of names set by `with gptcore.backend(...)`
_loaded = {}          # backend -> None if usable, else the reason it is not


def _load(name):
    """Imports a backend once; returns None if it loaded, else why it cannot be used."""
    if name not in _loaded:
        _loaded[name] = None
        try:
            if name == "triton" and importlib.util.find_spec("triton") is None:
                _loaded[name] = "triton is not installed (pip install triton)"
            else:
                importlib.import_module(f"gptcore.backends.{name}")
        except ImportError as err:
            _loaded[name] = f"it failed to load ({err})"
    return _loaded[name]


@functools.cache
def environment():
    """($GPTCORE_BACKEND, whether TRITON_INTERPRET=1), read once per process at the first op
    call, as torch reads its own variables: reading os.environ twice per op call cost a decode
    step more than its norms (docs/quantize.md). Code that changes them later calls
    environment.cache_clear()."""
    name = os.environ.get("GPTCORE_BACKEND", "auto")
    if name not in _CHOICES:
        raise ValueError(f"GPTCORE_BACKEND: expected one of {_CHOICES}, got {name!r}")
    return name, os.environ.get("TRITON_INTERPRET") == "1"


def _interpreting():
    return environment()[1]


def available_backends():
    """{"ref": True, "cpp": bool, "triton": bool}: what can run on this machine."""
    return {
        "ref": True,
        "cpp": _load("cpp") is None,
        "triton": _load("triton") is None and (torch.cuda.is_available() or _interpreting()),
    }


@contextlib.contextmanager
def backend(name):
    """Forces a backend ("ref", "cpp", "triton" or "auto") for the calls inside the block."""
    if name not in _CHOICES:
        raise ValueError(f"gptcore.backend: expected one of {_CHOICES}, got {name!r}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def current():
    """The backend asked for: innermost `with gptcore.backend(...)`, else $GPTCORE_BACKEND."""
    if _forced:
        return _forced[-1]
    return environment()[0]


def _unfit(name, op, device_type):
    """Why backend `name` cannot run `op` on `device_type` tensors, or None if it can."""
    reason = _load(name)
    if reason is not None:
        return reason
    if name == "triton" and device_type == "cpu" and not _interpreting():
        return "Triton runs CPU tensors only under the interpreter (TRITON_INTERPRET=1)"
    if name == "triton" and device_type != "cpu" and not torch.cuda.is_available():
        return "no CUDA device"
    key = "CUDA" if device_type == "cuda" else "CPU"
    if not has_op(_PREFIX[name] + op, key):
        return f"it has no {op} kernel for {device_type} tensors yet"
    return None


# Runs in Python even while torch.compile traces (the choice is fixed when a graph is made).
@torch.compiler.assume_constant_result
def _choose(op, device_type):
    """Name of the op to call: <prefix><op> of the backend chosen for `device_type`."""
    return _resolve(op, device_type, current(), _interpreting())


@functools.lru_cache(maxsize=None)
def _resolve(op, device_type, name, interpreting):
    """_choose's answer for one setting (cached: it cannot change while the process runs,
    since backends only ever load once)."""
    if name == "auto":
        native = "triton" if device_type == "cuda" else "cpp"
        reason = _unfit(native, op, device_type)
        if reason is None:
            name = native
        else:
            warnings.warn(f"gptcore: the {native} backend cannot run {op} on {device_type} "
                          f"tensors ({reason}); using the pure-PyTorch reference, which is "
                          "slower.", stacklevel=5)
            name = "ref"
    reason = _unfit(name, op, device_type)
    if reason is not None:
        raise RuntimeError(f"gptcore backend {name!r} cannot run {op} on {device_type} tensors: "
                           f"{reason}")
    return _PREFIX[name] + op


def select(op, device):
    """The op to call, torch.ops.gptcore.<prefix><op>, of the backend chosen for `device`."""
    return getattr(torch.ops.gptcore, _choose(op, device.type))
