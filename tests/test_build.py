"""The build: the extension loads and reports how it was built."""
import os
import subprocess
import sys

import pytest
import torch

import gptcore


def test_cpp_backend_available():
    assert gptcore.available_backends()["cpp"], "gptcore._C did not load: is the package built?"


def test_build_info():
    from gptcore import _C
    info = _C.build_info()
    assert info["torch"] == torch.__version__.split("+")[0]
    assert info["build_type"] == "Release"
    assert info["cxx_standard"] >= 201703
    assert info["openmp"] > 0, "built without OpenMP: at::parallel_for would run on one thread"


def test_isa_switch_round_trips():
    from gptcore import _C
    highest = _C.isa_levels()[-1]
    assert _C.build_info()["isa"] == highest
    assert _C.set_isa("portable") == "portable"
    try:
        assert _C.build_info()["isa"] == "portable"
    finally:
        _C.set_isa(highest)
    assert _C.build_info()["isa"] == highest


def test_every_op_has_a_cpp_kernel_under_the_one_schema():
    """Schemas are written once (each op's spec); the extension registers only CPU kernels, so
    every op must have one, under exactly that schema."""
    from gptcore.ops.spec import SPECS, has_op
    gptcore.available_backends()  # loads the extension
    for name, spec in SPECS.items():
        assert has_op(name, "CPU"), f"{name}: no C++ CPU kernel"
        got = str(getattr(torch.ops.gptcore, name).default._schema)
        assert got == str(torch._C.parse_schema(f"gptcore::{name}{spec.schema}")), got


def test_torchs_mkl_sgemm_is_resolved():
    """A silent fallback from MKL to our own tiles would pass every correctness test at a
    third of the speed: where torch ships MKL, our build must have found its sgemm, and
    build_info's paths must say the fp32 kernels use it."""
    from gptcore import _C
    info = _C.build_info()
    assert info["sgemm"] is torch.backends.mkl.is_available(), info
    if info["sgemm"]:
        assert "BLAS sgemm" in info["paths"]["moe_experts fp32"], info["paths"]


@pytest.mark.parametrize("level,ok", [("portable", True), ("avx2", True), ("sse9", False)])
def test_isa_from_the_environment(level, ok):
    """GPTCORE_ISA sets the level for the process; an unknown level is refused, named."""
    code = "import gptcore; gptcore.available_backends(); from gptcore import _C; print(_C.isa())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "GPTCORE_ISA": level})
    if ok:
        assert run.returncode == 0 and run.stdout.split()[-1] == level, run.stderr[-2000:]
    else:
        assert run.returncode != 0 and "GPTCORE_ISA: expected one of" in run.stderr


@pytest.mark.parametrize("cap", [None, "AVX512_CORE_BF16"])
def test_amx_route_follows_the_cpu_and_onednns_cap(cap):
    """bf16 goes to oneDNN's AMX path exactly where oneDNN may use AMX: the CPU has AMX-BF16
    (Linux lists amx_bf16) and ONEDNN_MAX_CPU_ISA does not cap it below AMX."""
    code = ("from gptcore import _C; "
            "print(dict(_C.build_info())['paths'].get('attention bf16', ''))")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    with open("/proc/cpuinfo") as f:
        amx = " amx_bf16" in f.read()
    assert ("oneDNN on AMX" in out) == (amx and cap is None), out
