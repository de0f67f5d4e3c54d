// The pybind11 module that carries the non-op helpers (build info, the ISA switch). The ops'
// schemas are defined once, in gptcore/ops/_registry.py, with their fake and autograd
// registrations; each op's CPU kernel registers itself in csrc/<op>_cpu.cpp.
#include <torch/version.h>
#include <pybind11/pybind11.h>

#include "blas.h"
#include "cpu_features.h"

namespace py = pybind11;

static py::dict build_info() {
  py::dict info;
  info["torch"] = TORCH_VERSION;
  info["compiler"] = GPTCORE_COMPILER;
  info["build_type"] = GPTCORE_BUILD_TYPE;
  info["cxx_standard"] = __cplusplus;
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
#else
  info["openmp"] = 0;
#endif
  info["avx2_kernels"] = gptcore::use_avx2();
  info["bf16_dot"] = gptcore::cpu_has_bf16_dot();
  // Which GEMM each path runs: the sgemm torch exports (MKL in torch's x86-64 wheels), or the
  // fallback a silent miss would bring (about a third of the speed for attention tiles).
  const bool sgemm = gptcore::blas_available();
  py::dict blas;
  blas["sgemm"] = sgemm ? "resolved" : "unresolved";
  blas["attention_tiles"] = sgemm ? "sgemm (>= 16 rows), own kernels below" : "own kernels";
  blas["moe_experts_fp32"] = sgemm ? "sgemm" : "at::mm";
  blas["moe_experts_bf16"] = gptcore::cpu_has_bf16_dot() ? "at::mm (oneDNN bf16)" : "own fp32 tiles";
  info["blas"] = blas;
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "gptcore's C++ extension: kernels registered as torch.ops.gptcore.*, and build helpers";
  m.def("build_info", &build_info, "How this extension was built and which CPU paths it uses.");
  m.def("set_avx2_enabled", &gptcore::set_avx2_enabled, py::arg("enabled"),
        "Switch the AVX2 kernels off (False) to run the portable path, or back on.");
}
