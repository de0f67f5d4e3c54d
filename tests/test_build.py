"""The build: the extension loads and reports how it was built; CUDA sources compile."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

import gptcore

ROOT = Path(__file__).resolve().parent.parent
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


def test_cpp_backend_available():
    assert gptcore.available_backends()["cpp"], "gptcore._C did not load: is the package built?"


def test_build_info():
    from gptcore import _C
    info = _C.build_info()
    assert info["torch"] == torch.__version__.split("+")[0]
    assert info["build_type"] == "Release"
    assert info["cxx_standard"] >= 201703
    assert info["openmp"] > 0, "built without OpenMP: at::parallel_for would run on one thread"
    if torch.version.cuda is None:
        assert info["cuda"] is False, "CUDA kernels built against a CPU-only torch"


def test_avx2_switch_round_trips():
    from gptcore import _C
    on = _C.build_info()["avx2_kernels"]
    _C.set_avx2_enabled(False)
    try:
        assert _C.build_info()["avx2_kernels"] is False
    finally:
        _C.set_avx2_enabled(True)
    assert _C.build_info()["avx2_kernels"] == on


def test_every_cpp_schema_matches_the_registry():
    from gptcore.ops import _registry
    gptcore.available_backends()  # loads the extension
    cpp_ops = [n for n in _registry.SCHEMAS if torch._C._dispatch_has_kernel(f"gptcore::{n}")]
    assert cpp_ops, "the C++ extension registered no ops"
    for name in cpp_ops:
        schema = str(getattr(torch.ops.gptcore, name).default._schema)
        expected = str(torch._C.parse_schema(f"gptcore::{name}{_registry.SCHEMAS[name]}"))
        assert schema == expected, f"{name}: C++ schema {schema} != registry {expected}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
@pytest.mark.skipif(not CUDA_SOURCES, reason="csrc/cuda holds no .cu files yet")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    """Compile-only: CPU machines have nvcc but no GPU, so this is how CUDA code stays honest."""
    cmd = ["nvcc", "-std=c++17", "-c", str(source), "-o", str(tmp_path / "out.o"),
           "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-I", str(ROOT / "csrc"), *[f"-I{p}" for p in include_paths()]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stderr[-4000:]}"
