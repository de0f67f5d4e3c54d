// The one place where gptcore's C++ op schemas are declared (torch.ops.gptcore.*), plus the
// pybind11 module that carries the non-op helpers. Each op's CPU kernel registers itself in
// csrc/<op>_cpu.cpp; fake (meta) and autograd registrations live in gptcore/ops/_registry.py.
#include <torch/library.h>
#include <torch/version.h>
#include <pybind11/pybind11.h>

#include "blas.h"
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
