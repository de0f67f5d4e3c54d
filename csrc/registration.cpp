// The one place where gptcore's C++ op schemas are declared (torch.ops.gptcore.*), plus the
// pybind11 module that carries the non-op helpers. Each op's CPU kernel registers itself in
// csrc/<op>_cpu.cpp; fake (meta) and autograd registrations live in gptcore/ops/_registry.py.
#include <torch/library.h>
#include <torch/version.h>
#include <pybind11/pybind11.h>

#include <string>

#include "cpu_features.h"

TORCH_LIBRARY(gptcore, m) {
  m.set_python_module("gptcore.ops._registry");
  // Attention (flash-attention style, CPU kernels in csrc/attention_cpu.cpp, attention_bwd_cpu.cpp).
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? sinks, bool causal, float scale, "
        "int window_left, int window_right, float softcap) -> (Tensor, Tensor)");
  m.def("attention_bwd(Tensor dout, Tensor dlse, Tensor q, Tensor k, Tensor v, Tensor out, "
        "Tensor lse, Tensor? sinks, bool causal, float scale, int window_left, "
        "int window_right, float softcap) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("attention_varlen_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, "
        "Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, "
        "Tensor? sinks, bool causal, float scale, int window_left, "
        "int window_right, float softcap) -> (Tensor, Tensor)");
  m.def("attention_varlen_bwd(Tensor dout, Tensor dlse, Tensor q, Tensor k, Tensor v, "
        "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, "
        "int max_seqlen_k, Tensor out, Tensor lse, Tensor? sinks, bool causal, "
        "float scale, int window_left, int window_right, float softcap) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // MXFP4 (OCP MX): w (..., K) -> blocks uint8 (..., K/2), scales uint8 (..., K/32).
  m.def("mxfp4_quantize(Tensor w) -> (Tensor, Tensor)");
  m.def("mxfp4_dequantize(Tensor blocks, Tensor scales, ScalarType dtype) -> Tensor");
  // MoE: routing, the dispatch index (format in csrc/moe_index.h), grouped expert GEMMs.
  m.def("route(Tensor logits, int top_k, str scoring, bool renormalize, Tensor? bias) "
        "-> (Tensor, Tensor)");
  m.def("route_bwd(Tensor dweights, Tensor logits, Tensor indices, str scoring, "
        "bool renormalize, Tensor? bias) -> Tensor");
  m.def("moe_index(Tensor indices, int num_experts, int block_m) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("moe_experts_fwd(Tensor x, Tensor indices, Tensor weights, Tensor gate_up_proj, "
        "Tensor down_proj, Tensor? gate_up_bias, Tensor? down_bias, str activation, "
        "float alpha, float limit) -> Tensor");
  m.def("moe_experts_bwd(Tensor dy, Tensor x, Tensor indices, Tensor weights, "
        "Tensor gate_up_proj, Tensor down_proj, Tensor? gate_up_bias, Tensor? down_bias, "
        "str activation, float alpha, float limit) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("moe_experts_mxfp4(Tensor x, Tensor indices, Tensor weights, Tensor gate_up_blocks, "
        "Tensor gate_up_scales, Tensor down_blocks, Tensor down_scales, "
        "Tensor? gate_up_bias, Tensor? down_bias, str activation, float alpha, "
        "float limit) -> Tensor");
}

namespace py = pybind11;

static py::dict build_info() {
  py::dict info;
  info["torch"] = TORCH_VERSION;
  info["compiler"] = GPTCORE_COMPILER;
  info["build_type"] = GPTCORE_BUILD_TYPE;
  info["cxx_standard"] = __cplusplus;
  info["cuda"] = static_cast<bool>(GPTCORE_WITH_CUDA);
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
#else
  info["openmp"] = 0;
#endif
  info["avx2_kernels"] = gptcore::use_avx2();
  info["bf16_dot"] = gptcore::cpu_has_bf16_dot();
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
  m.def("set_avx2_enabled", &gptcore::set_avx2_enabled, py::arg("enabled"),
        "Switch the SIMD kernels off (False) to run the portable path, or back on (the "
        "highest level this CPU has).");
  m.def("set_isa", &set_isa, py::arg("level"),
        "Choose the kernels' ISA level ('portable', 'avx2', 'avx512', 'avx512_bf16'), clamped "
        "to what this CPU supports; returns the level now active.");
  m.def("isa", [] { return std::string(gptcore::isa_name(gptcore::active_isa())); },
        "The ISA level the kernels use now.");
  m.def("isa_levels", &isa_levels, "The ISA levels this CPU supports, lowest first.");
}
