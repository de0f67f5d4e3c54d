"""Test-session setup.

The Triton kernels are proven on CPU under the Triton interpreter. @triton.jit decides between
interpreter and compiler when a function is decorated (triton's own helpers included, and
`import torch` may import triton), so TRITON_INTERPRET=1 is set here, before anything imports
triton, and the Triton backend is loaded at once: tests that unset the variable to check that
Triton then refuses CPU tensors must not be the first to import our kernels. The variable only
lets Triton run CPU tensors when a test forces gptcore.backend("triton"); the auto backend still
sends CPU tensors to the C++ extension. The ahead-of-time compile check runs in a child process
without it.

`make gpu-check` sets GPTCORE_TEST_DEVICE=cuda: the Triton suites then run compiled on a GPU,
every tensor a test makes lands on the CUDA device, and the interpreter stays off.

GPTCORE_TEST_FP32_PRECISION=high runs the session under torch.set_float32_matmul_precision("high"),
so fp32 tl.dot runs TF32 (the kernels follow torch's setting) and the suites' tolerances take
their TF32 bounds (tests/checks.py). On the interpreter, fp32 dot operands are then truncated to
TF32 as the GPU's tensor cores read them. ("medium" is refused: on CPUs with bf16 units it
moves torch's own fp32 CPU matmuls, the reference's, to bf16.)
"""
import os

GPU_RUN = os.environ.get("GPTCORE_TEST_DEVICE") == "cuda"
if not GPU_RUN:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import gptcore  # noqa: E402

if GPU_RUN:
    torch.set_default_device("cuda")

gptcore.available_backends()   # imports gptcore.backends.triton and its kernels now

FP32_PRECISION = os.environ.get("GPTCORE_TEST_FP32_PRECISION", "highest")
if FP32_PRECISION not in ("highest", "high"):
    raise pytest.UsageError(f"GPTCORE_TEST_FP32_PRECISION: expected highest or high, "
                            f"got {FP32_PRECISION!r}")


@pytest.fixture(scope="session", autouse=True)
def fp32_precision():
    """The session's fp32 matmul precision (GPTCORE_TEST_FP32_PRECISION, default highest)."""
    if FP32_PRECISION == "highest":
        yield
    elif GPU_RUN:
        torch.set_float32_matmul_precision(FP32_PRECISION)
        yield
    else:
        from checks import interpreter_tf32
        with interpreter_tf32():
            yield


def _isa_levels():
    """Every ISA level this CPU has (portable first), or just portable without the extension."""
    try:
        from gptcore import _C
    except ImportError:
        return ["portable"]
    return list(_C.isa_levels())


ISA_LEVELS = _isa_levels()


@pytest.fixture
def one_thread():
    """Tiny models run on one thread: with two on a loaded 2-core machine every small GEMM waits
    at the other thread's barrier, many times slower (docs/cpu-isa.md, "Measurements behind the
    code"). The count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=ISA_LEVELS)
def isa(request):
    """Runs a C++ test once per ISA level this CPU has (avx512_bf16, avx512, avx2, portable)."""
    from gptcore import _C
    assert _C.set_isa(request.param) == request.param
    yield request.param
    _C.set_isa(ISA_LEVELS[-1])


# Property-based tests (tests/test_properties*.py). "ci" (the default): 12 examples a test,
# drawn afresh every run (not derandomized), so successive runs search new inputs; a failing
# example is kept in the example database (.hypothesis/) and replayed first by the next run,
# and print_blob prints what @reproduce_failure needs. The run's seed is printed in the header:
# HYPOTHESIS_SEED=<seed> draws the same examples again (same tests selected). "long"
# (HYPOTHESIS_PROFILE=long): 400 examples a test, for deep runs. deadline=None: timings on a
# shared 2-core machine vary too much for a per-example deadline to mean anything; the example
# count bounds the time.
import random  # noqa: E402

import hypothesis.core  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

# derandomize and database are set, not inherited: under CI=true hypothesis's defaults are
# derandomize=True and no database, which would make every CI run search the same inputs.
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=False,
                          database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("long", max_examples=400, deadline=None, derandomize=False,
                          database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)
HYPOTHESIS_SEED = int(os.environ.get("HYPOTHESIS_SEED") or random.SystemRandom().getrandbits(32))
# Each test's seed comes from this Random (hypothesis 6.170 draws them from it in test order);
# seeding it, rather than passing --hypothesis-seed, keeps the example database in use.
hypothesis.core.threadlocal._hypothesis_global_random = random.Random(HYPOTHESIS_SEED)


def pytest_report_header(config):
    return (f"hypothesis: profile {HYPOTHESIS_PROFILE!r}, run seed {HYPOTHESIS_SEED} "
            f"(HYPOTHESIS_SEED={HYPOTHESIS_SEED} draws this run's examples again)")


# ----------------------------------------------------------------------------- skip policy
# A skipped suite proves nothing, so a skip fails the run unless it is for hardware these
# machines do not have. Such a skip must say so with this phrase in its reason.
HARDWARE_SKIP = "needs a CUDA GPU"
_skips = []


def _record_skip(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skips.append((report.nodeid, reason))


def pytest_collectreport(report):
    _record_skip(report)


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_terminal_summary(terminalreporter):
    hardware = [s for s in _skips if HARDWARE_SKIP in s[1]]
    other = [s for s in _skips if HARDWARE_SKIP not in s[1]]
    terminalreporter.write_line(f"skip policy: {len(hardware)} skipped for missing hardware "
                                f"({HARDWARE_SKIP}), {len(other)} skipped for anything else")
    for nodeid, reason in other:
        terminalreporter.write_line(f"  NOT ALLOWED: {nodeid}: {reason}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if any(HARDWARE_SKIP not in reason for _, reason in _skips) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
