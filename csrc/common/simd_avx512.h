// Helpers shared by the AVX-512 kernel files (*_avx512.cpp, compiled with -mavx512f/bw/vl/dq).
// Include only from those files: these inline functions must never be compiled for the
// portable path.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace gptcore {

// The first n (< 16) lanes.
inline __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }

// exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln2 (Cody-Waite, two parts), |r| <=
// ln2/2: the degree-6 Taylor polynomial is within 2 ulp there; vscalefps applies 2^n (rounding
// once into the subnormals). Below `lowest` (-inf included) the zeroing mask gives exactly 0:
// by default ln(FLT_MIN), as the AVX2 attention kernel does; kExpSubnormal keeps every nonzero
// result down to 2^-149, as std::exp and torch.softmax do (routing ranks those values).
constexpr float kExpNormal = -87.33654f;
constexpr float kExpSubnormal = -103.972077f;
inline __m512 exp512(__m512 x, float lowest = kExpNormal) {
  const __m512 lo = _mm512_set1_ps(lowest);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.3762626f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), p, n);
}

}  // namespace gptcore
