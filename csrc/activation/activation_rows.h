// The gated activations (SwiGLU, GeGLU) over fp32 rows: plain loops with `omp simd`,
// vectorised at the width of the file that includes this header (activation_{portable,avx2,
// avx512}.cpp), so one rule serves every ISA level. The backward passes recompute the
// activation from its input instead of storing it. No ATen here.
#pragma once
#include <cstdint>

#include "activation_kernels.h"
#include "activation_math.h"

namespace gptcore::activation_rows {
namespace m = activation_math;

// Rows [begin, end) of gate_up (rows, 2I), gate = [0, I), up = [I, 2I): y (rows, I) = act(gate) * up.
static void gated_forward(const float* gate_up, float* y, int64_t begin, int64_t end, int64_t I,
                          GatedKind kind) {
  for (int64_t r = begin; r < end; ++r) {
    const float* g = gate_up + r * 2 * I;
    const float* u = g + I;
    float* yr = y + r * I;
    if (kind == GatedKind::kSwiglu) {
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) yr[i] = g[i] * m::sigmoid(g[i]) * u[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) yr[i] = m::gelu_tanh(g[i]) * u[i];
    }
  }
}

// dgate = dy * up * act'(gate), dup = dy * act(gate), into dgate_up (rows, 2I).
static void gated_backward(const float* dy, const float* gate_up, float* dgate_up, int64_t begin,
                           int64_t end, int64_t I, GatedKind kind) {
  for (int64_t r = begin; r < end; ++r) {
    const float* g = gate_up + r * 2 * I;
    const float* u = g + I;
    const float* dyr = dy + r * I;
    float* dg = dgate_up + r * 2 * I;
    float* du = dg + I;
    if (kind == GatedKind::kSwiglu) {
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) {
        const float s = m::sigmoid(g[i]);
        du[i] = dyr[i] * g[i] * s;
        dg[i] = dyr[i] * u[i] * (s + g[i] * s * (1.f - s));
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) {
        du[i] = dyr[i] * m::gelu_tanh(g[i]);
        dg[i] = dyr[i] * u[i] * m::gelu_tanh_grad(g[i]);
      }
    }
  }
}

}  // namespace gptcore::activation_rows
