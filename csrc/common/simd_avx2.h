// Helpers shared by the AVX2 kernel files (*_avx2.cpp, compiled with -mavx2 -mfma). Include
// only from those files: these inline functions must never be compiled for the portable path.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace gptcore {

// Lane mask selecting the first n (< 8) lanes, for vmaskmovps.
static inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Sum of the 8 lanes.
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln2 (Cody-Waite, two parts), |r| <= ln2/2,
// exp(r) by its degree-6 Taylor polynomial (within 2 ulp there); 2^n built in the exponent
// field. Below ln(FLT_MIN) (-inf included) the result is exactly 0; above ln(FLT_MAX) it is
// clamped to exp(88.376) instead of inf.
static inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3762626f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i pow2 =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(pow2)),
                       _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

// 2^x for x <= 0 (the column-layout softmax, scores in base 2): n = round(x), 2^(x - n) by its
// degree-6 Taylor polynomial in ln2 (|x - n| <= 1/2, within 2 ulp), 2^n built in the exponent
// field (AVX2 has no vscalefps). x is clamped to -126 first so that 2^n stays a normal number;
// inputs below -126 (-inf included) then give exactly 0 through the compare mask.
static inline __m256 exp2_256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-126.0f);
  const __m256 xc = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(xc, n);
  __m256 p = _mm256_set1_ps(1.5403530393e-4f);  // ln2^6 / 720
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558146e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.6181291076e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.5504108665e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.4022650696e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.9314718056e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i pow2 =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(pow2)),
                       _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

}  // namespace gptcore
