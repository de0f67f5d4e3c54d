// The pybind11 module that carries the non-op helpers (build info, the ISA switch). The ops'
// schemas are defined once, in gptcore/ops/_registry.py, with their fake and autograd
// registrations; each op's CPU kernel registers itself in csrc/<op>_cpu.cpp.
#include <torch/version.h>
#include <pybind11/pybind11.h>

#include <string>

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
  info["bf16_dot"] = gptcore::cpu_has_bf16_dot();
  // Whether the sgemm torch exports (MKL in torch's x86-64 wheels) resolved: a silent miss
  // would fall back to our own tiles at about a third of the speed ("paths" says where).
  info["sgemm"] = gptcore::blas_available();
  info["isa"] = gptcore::isa_name(gptcore::active_isa());
  info["cpu_isa"] = gptcore::isa_name(gptcore::cpu_isa());
  py::dict paths;
  for (const auto& [op, path] : gptcore::op_paths()) paths[py::str(op)] = path;
  info["paths"] = paths;
  return info;
}

// The ISA levels as names, lowest first, up to what this CPU has.
static py::list isa_levels() {
  py::list names;
  for (int l = 0; l <= static_cast<int>(gptcore::cpu_isa()); ++l)
    names.append(gptcore::isa_name(static_cast<gptcore::Isa>(l)));
  return names;
}

static std::string set_isa(const std::string& name) {
  for (int l = 0; l <= static_cast<int>(gptcore::Isa::kAvx512Bf16); ++l) {
    const auto level = static_cast<gptcore::Isa>(l);
    if (name == gptcore::isa_name(level)) return gptcore::isa_name(gptcore::set_isa(level));
  }
  throw py::value_error("set_isa: level must be one of portable, avx2, avx512, avx512_bf16, got '" +
                        name + "'");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "gptcore's C++ extension: kernels registered as torch.ops.gptcore.*, and build helpers";
  m.def("build_info", &build_info, "How this extension was built and which CPU paths it uses.");
  m.def("set_isa", &set_isa, py::arg("level"),
        "Choose the kernels' ISA level ('portable', 'avx2', 'avx512', 'avx512_bf16'), clamped "
        "to what this CPU supports; returns the level now active.");
  m.def("isa", [] { return std::string(gptcore::isa_name(gptcore::active_isa())); },
        "The ISA level the kernels use now.");
  m.def("isa_levels", &isa_levels, "The ISA levels this CPU supports, lowest first.");
}
