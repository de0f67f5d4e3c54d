// The RMSNorm row kernels at each ISA level: the same loops (rms_norm_rows.h) compiled in
// rms_norm_portable.cpp, rms_norm_avx2.cpp and rms_norm_avx512.cpp; the last two are called
// only when cpu_features.h says so. No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

struct RmsNormKernels {
  void (*forward)(const float* x, const float* residual, const float* weight, float* y, float* h,
                  float* rstd, int64_t begin, int64_t end, int64_t dim, float eps);
  void (*backward)(const float* dy, const float* dh, const float* src, const float* weight,
                   const float* rstd, float* dx, float* dweight, int64_t begin, int64_t end,
                   int64_t dim);
};

extern const RmsNormKernels kRmsNormPortable;
extern const RmsNormKernels kRmsNormAvx2;
extern const RmsNormKernels kRmsNormAvx512;

}  // namespace gptcore
