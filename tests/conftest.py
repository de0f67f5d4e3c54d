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


@pytest.fixture(params=[True, False], ids=["avx2", "portable"])
def isa(request):
    """Runs a C++ test on the AVX2 kernels and again on the portable path."""
    from gptcore import _C
    _C.set_avx2_enabled(request.param)
    yield request.param
    _C.set_avx2_enabled(True)


# Property-based tests (tests/test_properties*.py): a fixed, bounded profile for CI, and a longer
# random search by HYPOTHESIS_PROFILE=long. deadline=None: timings on a shared 2-core machine
# vary too much for a per-example deadline to mean anything; the example count bounds the time.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", derandomize=True, max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("long", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
