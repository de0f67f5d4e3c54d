"""Builds gptcore: the Python package (its Triton kernels included) and the C++
extension gptcore._C, which CMake + Ninja compile against the installed torch."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds CMakeLists.txt; the module lands where setuptools expects it."""

    def build_extension(self, ext):
        try:
            import pybind11
            import torch
        except ImportError:
            sys.exit("gptcore build: torch is not installed in this environment. Install it first "
                     "(pip install torch==2.13.0 pybind11) and build with --no-build-isolation.")
        for tool in ("cmake", "ninja"):
            if shutil.which(tool) is None:
                sys.exit(f"gptcore build: `{tool}` was not found on PATH (pip install {tool}).")
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        # One build folder per interpreter and torch, shared by every build of this checkout
        # (editable, wheel): a wheel after `make build` only relinks instead of recompiling.
        tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"
        build_dir = ROOT / "build" / f"cmake-{tag}"
        build_dir.mkdir(parents=True, exist_ok=True)
        config = "Debug" if self.debug else "Release"
        configure = [
            "cmake", str(ROOT), "-G", "Ninja",
            f"-DCMAKE_BUILD_TYPE={config}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DGPTCORE_OUTPUT_DIR={out_dir}",
            f"-DGPTCORE_MODULE_SUFFIX={self.get_ext_filename('x')[1:]}",
        ]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        try:
            subprocess.run(configure, cwd=build_dir, check=True)
            subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)
        except subprocess.CalledProcessError as err:
            sys.exit(f"gptcore build: `{' '.join(err.cmd[:3])} ...` failed (exit {err.returncode}); "
                     f"the compiler's message is above. Build directory: {build_dir}")


setup(
    packages=find_packages(include=["gptcore", "gptcore.*"]),
    package_data={"gptcore": ["datasets/names.txt", "datasets/tinyshakespeare.txt"]},
    ext_modules=[CMakeExtension("gptcore._C")],
    cmdclass={"build_ext": CMakeBuild},
)
