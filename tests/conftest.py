"""Test-session setup.

The Triton kernels are proven on CPU under the Triton interpreter. @triton.jit decides between
interpreter and compiler when a function is decorated (triton's own helpers included, and
`import torch` may import triton), so TRITON_INTERPRET=1 is set here, before anything imports
triton, and the Triton backend is loaded at once: tests that unset the variable to check that
Triton then refuses CPU tensors must not be the first to import our kernels. The variable only
lets Triton run CPU tensors when a test forces gptcore.backend("triton"); the auto backend still
sends CPU tensors to the C++ extension. The ahead-of-time compile check runs in a child process
without it.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import gptcore  # noqa: E402

gptcore.available_backends()   # imports gptcore.ops.triton_backend and its kernels now


def _isa_levels():
    """Every ISA level this CPU has (portable first), or just portable without the extension."""
    try:
        from gptcore import _C
    except ImportError:
        return ["portable"]
    return list(_C.isa_levels())


ISA_LEVELS = _isa_levels()


@pytest.fixture(params=ISA_LEVELS)
def isa(request):
    """Runs a C++ test once per ISA level this CPU has (avx512_bf16, avx512, avx2, portable)."""
    from gptcore import _C
    assert _C.set_isa(request.param) == request.param
    yield request.param
    _C.set_avx2_enabled(True)
