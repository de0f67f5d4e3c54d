// GELU over fp32 arrays as plain `omp simd` loops over activation_math.h's scalar functions: the
// portable level's kernels (the AVX2 and AVX-512 ones are gelu_simd.h's). The backward pass
// recomputes the activation from its input instead of storing it. No ATen here.
#pragma once
#include <cstdint>

#include "activation_math.h"

namespace gptcore::gelu_rows {
namespace m = activation_math;

// y[i] = gelu(x[i]) for i in [begin, end).
static void forward(const float* x, float* y, int64_t begin, int64_t end, bool tanh_form) {
  if (tanh_form) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) y[i] = m::gelu_tanh(x[i]);
  } else {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) y[i] = m::gelu_erf(x[i]);
  }
}

// dx[i] = dy[i] * gelu'(x[i]).
static void backward(const float* dy, const float* x, float* dx, int64_t begin, int64_t end,
                     bool tanh_form) {
  if (tanh_form) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) dx[i] = dy[i] * m::gelu_tanh_grad(x[i]);
  } else {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) dx[i] = dy[i] * m::gelu_erf_grad(x[i]);
  }
}

}  // namespace gptcore::gelu_rows
