// gptcore::gelu_fwd / gelu_bwd and gated_activation_fwd / _bwd on CPU tensors: elementwise (or
// row-wise) passes split over at::parallel_for. Non-fp32 inputs are converted to fp32 and back.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string_view>

#include "activation_kernels.h"
#include "checks.h"
#include "cpu_features.h"

namespace gptcore {
namespace {

// Elements per task: a tensor under 64K values runs on one thread (a 2-thread region costs a
// barrier that is dear when the other core is busy, more than the work at that size).
constexpr int64_t kGrain = 65536;

const ActivationKernels& kernels() {
#if GPTCORE_X86
  if (use_avx512()) return kActivationAvx512;
  if (use_avx2()) return kActivationAvx2;
#endif
  return kActivationPortable;
}

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

bool tanh_form(const char* op, c10::string_view approximate) {
  const std::string_view a(approximate.data(), approximate.size());
  TORCH_CHECK_VALUE(a == "none" || a == "tanh", "gptcore.", op,
                    ": approximate: expected 'none' or 'tanh', got '", a, "'");
  return a == "tanh";
}

GatedKind gated_kind(const char* op, c10::string_view kind) {
  const std::string_view k(kind.data(), kind.size());
  TORCH_CHECK_VALUE(k == "swiglu" || k == "geglu", "gptcore.", op,
                    ": kind: expected 'swiglu' or 'geglu', got '", k, "'");
  return k == "swiglu" ? GatedKind::kSwiglu : GatedKind::kGeglu;
}

at::Tensor gelu_fwd_cpu(const at::Tensor& x, c10::string_view approximate) {
  checks::floating("gelu_fwd", "x", x);
  const bool tanh = tanh_form("gelu_fwd", approximate);
  const auto xf = f32(x);
  auto y = at::empty(xf.sizes(), xf.options());
  const float* xp = xf.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const auto& k = kernels();
  at::parallel_for(0, xf.numel(), kGrain, [&](int64_t begin, int64_t end) {
    k.gelu_forward(xp, yp, begin, end, tanh);
  });
  return y.to(x.scalar_type());
}

at::Tensor gelu_bwd_cpu(const at::Tensor& dy, const at::Tensor& x, c10::string_view approximate) {
  checks::floating("gelu_bwd", "x", x);
  checks::floating("gelu_bwd", "dy", dy);
  checks::shape("gelu_bwd", "dy", dy, x.sizes().vec());
  const bool tanh = tanh_form("gelu_bwd", approximate);
  const auto xf = f32(x), dyf = f32(dy);
  auto dx = at::empty(xf.sizes(), xf.options());
  const float *xp = xf.data_ptr<float>(), *dyp = dyf.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  const auto& k = kernels();
  at::parallel_for(0, xf.numel(), kGrain, [&](int64_t begin, int64_t end) {
    k.gelu_backward(dyp, xp, dxp, begin, end, tanh);
  });
  return dx.to(x.scalar_type());
}

// gate_up (..., 2I): the half width I, and the rows.
std::pair<int64_t, int64_t> halves(const char* op, const at::Tensor& gate_up) {
  checks::floating(op, "gate_up", gate_up);
  TORCH_CHECK_VALUE(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0, "gptcore.", op,
                    ": gate_up: expected a last dim of even size (gate and up halves), got shape ",
                    gate_up.sizes());
  const int64_t I = gate_up.size(-1) / 2;
  return {I, I > 0 ? gate_up.numel() / (2 * I) : 0};
}

int64_t row_grain(int64_t I) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(2 * I, 1)); }

at::Tensor gated_activation_fwd_cpu(const at::Tensor& gate_up, c10::string_view kind) {
  const auto [I, rows] = halves("gated_activation_fwd", gate_up);
  const GatedKind kd = gated_kind("gated_activation_fwd", kind);
  const auto gf = f32(gate_up);
  auto shape = gate_up.sizes().vec();
  shape.back() = I;
  auto y = at::empty(shape, gf.options());
  const float* gp = gf.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const auto& k = kernels();
  at::parallel_for(0, rows, row_grain(I), [&](int64_t begin, int64_t end) {
    k.gated_forward(gp, yp, begin, end, I, kd);
  });
  return y.to(gate_up.scalar_type());
}

at::Tensor gated_activation_bwd_cpu(const at::Tensor& dy, const at::Tensor& gate_up,
                                    c10::string_view kind) {
  const auto [I, rows] = halves("gated_activation_bwd", gate_up);
  const GatedKind kd = gated_kind("gated_activation_bwd", kind);
  auto shape = gate_up.sizes().vec();
  shape.back() = I;
  checks::floating("gated_activation_bwd", "dy", dy);
  checks::shape("gated_activation_bwd", "dy", dy, shape);
  const auto gf = f32(gate_up), dyf = f32(dy);
  auto dg = at::empty(gf.sizes(), gf.options());
  const float *gp = gf.data_ptr<float>(), *dyp = dyf.data_ptr<float>();
  float* dgp = dg.data_ptr<float>();
  const auto& k = kernels();
  at::parallel_for(0, rows, row_grain(I), [&](int64_t begin, int64_t end) {
    k.gated_backward(dyp, gp, dgp, begin, end, I, kd);
  });
  return dg.to(gate_up.scalar_type());
}

}  // namespace
}  // namespace gptcore

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("gelu_fwd", &gptcore::gelu_fwd_cpu);
  m.impl("gelu_bwd", &gptcore::gelu_bwd_cpu);
  m.impl("gated_activation_fwd", &gptcore::gated_activation_fwd_cpu);
  m.impl("gated_activation_bwd", &gptcore::gated_activation_bwd_cpu);
}
