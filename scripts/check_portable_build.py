"""Builds gptcore._C as a non-x86 host would (CMake with GPTCORE_TARGET_ARCH=aarch64: the
*_avx2.cpp / *_avx512.cpp sources left out, GPTCORE_X86=0), with this machine's compiler, into a
temporary copy of the package, then loads it in a fresh process (every symbol resolved: a call
left into a SIMD file fails here) and checks attention and the MoE experts against gptcore.ref
on the portable path. Takes a few minutes (a full build).

    python scripts/check_portable_build.py
"""
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pybind11
import torch

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import torch, gptcore
from gptcore import _C, ref
assert gptcore.__file__.startswith({pkg!r}), gptcore.__file__
assert list(_C.isa_levels()) == ["portable"], _C.isa_levels()
print("paths:", _C.build_info()["paths"])
torch.manual_seed(0)
q, k, v = torch.randn(2, 4, 70, 40), torch.randn(2, 2, 90, 40), torch.randn(2, 2, 90, 40)
for dt in (torch.float32, torch.bfloat16):
    with gptcore.backend("cpp"):
        out = gptcore.attention(q.to(dt), k.to(dt), v.to(dt), causal=True)
    want = ref.attention(q.to(dt), k.to(dt), v.to(dt), causal=True)
    # fp32: accumulation order only; bf16: one rounding of the output (ulp 2^-8 near 1)
    torch.testing.assert_close(out.float(), want.float(), atol=1e-5 if dt == torch.float32 else 1e-2, rtol=0)
x, gu, dn = torch.randn(16, 64), torch.randn(4, 128, 64) / 8, torch.randn(4, 64, 64) / 8
w, idx = gptcore.route(torch.randn(16, 4), 2)
for dt in (torch.float32, torch.bfloat16):
    with gptcore.backend("cpp"):
        y = gptcore.moe_experts(x.to(dt), idx, w, gu.to(dt), dn.to(dt))
    want = ref.moe_experts(x.to(dt), idx, w, gu.to(dt), dn.to(dt))
    torch.testing.assert_close(y.float(), want.float(), atol=1e-5 if dt == torch.float32 else 1e-2, rtol=0)
with gptcore.backend("cpp"):
    y = gptcore.moe_experts(x, idx, w, gptcore.mxfp4_quantize(gu), gptcore.mxfp4_quantize(dn))
assert y.shape == (16, 64) and torch.isfinite(y).all()
print("portable build: loads, isa_levels ['portable'], attention and moe_experts match ref")
"""


def main():
    with tempfile.TemporaryDirectory(prefix="gptcore-portable-") as tmp:
        tmp = Path(tmp)
        pkg = tmp / "pkg"
        shutil.copytree(ROOT / "gptcore", pkg / "gptcore",
                        ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        configure = ["cmake", str(ROOT), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                     "-DGPTCORE_TARGET_ARCH=aarch64",
                     f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                     f"-DPython_EXECUTABLE={sys.executable}",
                     f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                     f"-DGPTCORE_OUTPUT_DIR={pkg / 'gptcore'}", f"-DGPTCORE_MODULE_SUFFIX={suffix}"]
        (tmp / "build").mkdir()
        subprocess.run(configure, cwd=tmp / "build", check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "."], cwd=tmp / "build", check=True)
        subprocess.run([sys.executable, "-c", CHECK.format(pkg=str(pkg))], check=True,
                       cwd=tmp, env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    main()
