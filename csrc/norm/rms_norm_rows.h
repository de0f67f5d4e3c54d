// RMSNorm over rows of fp32 (Zhang & Sennrich 2019): plain loops with `omp simd` reductions,
// which GCC vectorises at the width of the file that includes this header
// (rms_norm_{portable,avx2,avx512}.cpp), so one rule serves every ISA level. No ATen here.
#pragma once
#include <cmath>
#include <cstdint>

// static: each ISA's file keeps its own copy (an inline function would let the linker pick one
// ISA's code for all of them).
namespace gptcore::rms_norm_rows {

// Rows [begin, end) of x (rows, dim): h = x + residual (stored in h; without a residual the
// rows of x are normalised and h is unused), y = h * rstd [* weight], rstd = 1/sqrt(mean(h^2)+eps).
static void forward(const float* x, const float* residual, const float* weight, float* y,
                    float* h, float* rstd, int64_t begin, int64_t end, int64_t dim, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * dim;
    const float* src = xr;
    float squares = 0.f;
    if (residual != nullptr) {
      const float* rr = residual + r * dim;
      float* hr = h + r * dim;
#pragma omp simd reduction(+ : squares)
      for (int64_t d = 0; d < dim; ++d) {
        hr[d] = xr[d] + rr[d];
        squares += hr[d] * hr[d];
      }
      src = hr;
    } else {
#pragma omp simd reduction(+ : squares)
      for (int64_t d = 0; d < dim; ++d) squares += xr[d] * xr[d];
    }
    const float s = 1.f / std::sqrt(squares / static_cast<float>(dim) + eps);
    rstd[r] = s;
    float* yr = y + r * dim;
    if (weight != nullptr) {
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) yr[d] = src[d] * s * weight[d];
    } else {
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) yr[d] = src[d] * s;
    }
  }
}

// Rows [begin, end): with g = dy * weight, dsrc = rstd * g - src * rstd^3 * <g, src> / dim
// (+ dh, the gradient reaching h directly), written to dx; dweight += dy * src * rstd.
static void backward(const float* dy, const float* dh, const float* src, const float* weight,
                     const float* rstd, float* dx, float* dweight, int64_t begin, int64_t end,
                     int64_t dim) {
  for (int64_t r = begin; r < end; ++r) {
    const float* dyr = dy + r * dim;
    const float* sr = src + r * dim;
    const float s = rstd[r];
    float dot = 0.f;
    if (weight != nullptr) {
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < dim; ++d) dot += dyr[d] * weight[d] * sr[d];
    } else {
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < dim; ++d) dot += dyr[d] * sr[d];
    }
    const float c = s * s * s * dot / static_cast<float>(dim);
    float* dxr = dx + r * dim;
    const float* dhr = dh != nullptr ? dh + r * dim : nullptr;
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) {
      const float g = weight != nullptr ? dyr[d] * weight[d] : dyr[d];
      dxr[d] = s * g - c * sr[d] + (dhr != nullptr ? dhr[d] : 0.f);
    }
    if (dweight != nullptr) {
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) dweight[d] += dyr[d] * sr[d] * s;
    }
  }
}

}  // namespace gptcore::rms_norm_rows
