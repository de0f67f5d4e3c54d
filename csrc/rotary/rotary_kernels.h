// The rotary row kernels at each ISA level: the same loops (rotary_rows.h) compiled in
// rotary_portable.cpp, rotary_avx2.cpp and rotary_avx512.cpp; the last two are called only
// when cpu_features.h says so. No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

// Where the rows of one (B, S, H, D) tensor are: element (b, s, h, d) at
// x[b * stride_b + s * stride_s + h * stride_h + d]; tables (B or 1, S, D), contiguous, with
// table_b = S * D for per-batch tables and 0 for shared ones.
struct RotaryRows {
  const float* x;
  int64_t stride_b, stride_s, stride_h;
  const float* cos;
  const float* sin;
  int64_t table_b;
  int64_t S, H, D;
};

struct RotaryKernels {
  // Rows [begin, end) of the B * S * H rows (b, s, h) into y (rows, D), contiguous:
  // y = x * cos + rotate(x) * sin, or with `transpose` its adjoint (the backward):
  // y = x * cos - rotate(x * sin).
  void (*rows)(const RotaryRows& in, float* y, int64_t begin, int64_t end, bool interleaved,
               bool transpose);
};

extern const RotaryKernels kRotaryPortable;
extern const RotaryKernels kRotaryAvx2;
extern const RotaryKernels kRotaryAvx512;

}  // namespace gptcore
