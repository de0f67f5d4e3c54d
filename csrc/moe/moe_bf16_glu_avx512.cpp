// AVX-512 GLU for the blocked bf16 experts (see bf16_kernels.h): the transposed pre-activations
// h^T (one row per gate / up column, tokens along the row) -> GLU in fp32, 16 tokens a vector ->
// bf16 pairs in the packed B layout of the down projection. All three activations are
// g * sigmoid(s) * u, with exp from a degree-6 polynomial after Cody-Waite range reduction
// (relative error ~1e-7, far below the bf16 rounding that follows).
#include <immintrin.h>

#include <initializer_list>

#include "bf16_kernels.h"

namespace gptcore {
namespace {

inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);  // ln 2, split hi + lo
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (const float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

inline __m512 sigmoid_ps(__m512 s) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), s))));
}

// GLU of 16 tokens: act 0 silu, 1 gelu (tanh form), 2 gpt_oss (clamped, u + 1).
inline __m512 glu(int act, float alpha, float limit, __m512 g, __m512 u) {
  if (act == 2) {
    g = _mm512_min_ps(g, _mm512_set1_ps(limit));
    u = _mm512_max_ps(_mm512_min_ps(u, _mm512_set1_ps(limit)), _mm512_set1_ps(-limit));
    const __m512 s = sigmoid_ps(_mm512_mul_ps(g, _mm512_set1_ps(alpha)));
    return _mm512_mul_ps(_mm512_mul_ps(g, s), _mm512_add_ps(u, _mm512_set1_ps(1.0f)));
  }
  __m512 s = g;
  if (act == 1) {  // 0.5 g (1 + tanh(z)) = g sigmoid(2z), z = sqrt(2/pi) (g + 0.044715 g^3)
    const __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(g, g), g);
    s = _mm512_mul_ps(_mm512_fmadd_ps(g3, _mm512_set1_ps(0.044715f), g),
                      _mm512_set1_ps(2.0f * 0.7978845608f));
  }
  return _mm512_mul_ps(_mm512_mul_ps(g, sigmoid_ps(s)), u);
}

}  // namespace

void bf16_glu_pack_avx512(int act, float alpha, float limit, const float* ht, int64_t ldn,
                          int64_t up_row, int64_t row_step, const float* gate_bias,
                          const float* up_bias, int64_t w, int64_t n, uint32_t* dst,
                          int64_t pairs) {
  for (int64_t q = 0; q < w / 2; ++q) {
    for (int64_t t = 0; t < n; t += 16) {
      __m512 a[2];
      for (int half = 0; half < 2; ++half) {
        const int64_t gr = (2 * q + half) * row_step, ur = gr + up_row;
        __m512 g = _mm512_loadu_ps(ht + gr * ldn + t), u = _mm512_loadu_ps(ht + ur * ldn + t);
        if (gate_bias) {
          g = _mm512_add_ps(g, _mm512_set1_ps(gate_bias[gr]));
          u = _mm512_add_ps(u, _mm512_set1_ps(up_bias[gr]));
        }
        a[half] = glu(act, alpha, limit, g, u);
      }
      // (a[2q][t], a[2q + 1][t]) as one u32: the even k in the low half
      const __m512i lo = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a[0])));
      const __m512i hi = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a[1])));
      _mm512_storeu_si512(dst + t / 16 * 16 * pairs + 16 * q,
                          _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

}  // namespace gptcore
