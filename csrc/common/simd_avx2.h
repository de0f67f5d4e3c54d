// Helpers shared by the AVX2 kernel files (*_avx2.cpp, compiled with -mavx2 -mfma). Include
// only from those files: these inline functions must never be compiled for the portable path.
#pragma once
#include <immintrin.h>

namespace gptcore {

// Sum of the 8 lanes.
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace gptcore
