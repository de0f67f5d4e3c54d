// Rotary position embedding (Su et al. 2021, RoFormer) over rows of fp32: plain loops that GCC
// vectorises at the width of the file that includes this header
// (rotary_{portable,avx2,avx512}.cpp), so one rule serves every ISA level. No ATen here.
#pragma once
#include <cstdint>

#include "rotary_kernels.h"

// static: each ISA's file keeps its own copy (an inline function would let the linker pick one
// ISA's code for all of them).
namespace gptcore::rotary_rows {

// One row: rotate-half pairs i with i + D/2. Forward: (x1, x2) -> (x1 c1 - x2 s1, x2 c2 + x1 s2);
// the adjoint takes the partner's sine: (x1 c1 + x2 s2, x2 c2 - x1 s1).
static void half_row(const float* x, const float* c, const float* s, float* y, int64_t D,
                     bool transpose) {
  const int64_t h = D / 2;
  const float* s_lo = transpose ? s + h : s;        // the sine that multiplies x2 in y1
  const float* s_hi = transpose ? s : s + h;        // the sine that multiplies x1 in y2
  const float sign = transpose ? 1.f : -1.f;
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    y[i] = x[i] * c[i] + sign * x[i + h] * s_lo[i];
    y[i + h] = x[i + h] * c[i + h] - sign * x[i] * s_hi[i];
  }
}

// One row, interleaved: pairs 2i, 2i + 1, with the sines indexed as in half_row.
static void interleaved_row(const float* x, const float* c, const float* s, float* y, int64_t D,
                            bool transpose) {
  const int64_t lo = transpose ? 1 : 0, hi = transpose ? 0 : 1;
  const float sign = transpose ? 1.f : -1.f;
#pragma omp simd
  for (int64_t i = 0; i < D; i += 2) {
    y[i] = x[i] * c[i] + sign * x[i + 1] * s[i + lo];
    y[i + 1] = x[i + 1] * c[i + 1] - sign * x[i] * s[i + hi];
  }
}

static void rows(const RotaryRows& in, float* y, int64_t begin, int64_t end, bool interleaved,
                 bool transpose) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t h = r % in.H, s = (r / in.H) % in.S, b = r / (in.H * in.S);
    const float* x = in.x + b * in.stride_b + s * in.stride_s + h * in.stride_h;
    const int64_t t = b * in.table_b + s * in.D;
    (interleaved ? interleaved_row : half_row)(x, in.cos + t, in.sin + t, y + r * in.D, in.D,
                                               transpose);
  }
}

}  // namespace gptcore::rotary_rows
