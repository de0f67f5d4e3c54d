// AVX-512 row passes of MoE routing (see route_kernels.h): 16 experts a vector, the last
// partial vector through a lane mask, exp from the shared range-reduced polynomial.
#include <immintrin.h>

#include <cmath>

#include "route_kernels.h"
#include "simd_avx512.h"

namespace gptcore {
namespace {

inline __mmask16 lanes(int64_t E, int64_t e) {
  return E - e >= 16 ? __mmask16(0xffff) : first_lanes(E - e);
}

// sigmoid(x) from e = exp(-|x|) (never overflows): 1 / (1 + e) for x >= 0, e / (1 + e) below.
// torch computes 1 / (1 + exp(-x)), which is 0 once exp(-x) overflows (x < -88.7228): the
// same 0 here keeps the ranking of such logits (all tied) equal to the reference. NaN stays NaN.
inline __m512 sigmoid512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 neg_abs = _mm512_min_ps(x, _mm512_sub_ps(_mm512_setzero_ps(), x));
  const __m512 e = exp512(neg_abs, kExpSubnormal);
  const __m512 pos = _mm512_div_ps(one, _mm512_add_ps(one, e));
  __m512 s = _mm512_mask_mul_ps(pos, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), e,
                                pos);
  s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-88.7228394f), _CMP_LT_OQ),
                         _mm512_setzero_ps());
  return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

}  // namespace

void softmax_row_avx512(const float* row, int64_t E, float* probs) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t e = 0; e < E; e += 16)
    mx = _mm512_mask_max_ps(mx, lanes(E, e), mx, _mm512_maskz_loadu_ps(lanes(E, e), row + e));
  const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t e = 0; e < E; e += 16) {
    const __mmask16 m = lanes(E, e);
    const __m512 p = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + e), shift), kExpSubnormal);
    _mm512_mask_storeu_ps(probs + e, m, p);
    sum = _mm512_mask_add_ps(sum, m, sum, p);
  }
  const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
  for (int64_t e = 0; e < E; e += 16) {
    const __mmask16 m = lanes(E, e);
    _mm512_mask_storeu_ps(probs + e, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, probs + e), total));
  }
}

void sigmoid_row_avx512(const float* logit, const float* bias, int64_t E, float* score,
                        float* choice) {
  for (int64_t e = 0; e < E; e += 16) {
    const __mmask16 m = lanes(E, e);
    const __m512 s = sigmoid512(_mm512_maskz_loadu_ps(m, logit + e));
    _mm512_mask_storeu_ps(score + e, m, s);
    _mm512_mask_storeu_ps(choice + e, m,
                          bias ? _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, bias + e)) : s);
  }
}

bool top_k_avx512(const float* choice, int64_t E, int64_t k, int64_t* idx, uint16_t* taken) {
  const int64_t vectors = (E + 15) / 16;
  for (int64_t v = 0; v < vectors; ++v) taken[v] = 0;
  for (int64_t j = 0; j < k; ++j) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t v = 0; v < vectors; ++v) {
      const __mmask16 m = lanes(E, 16 * v) & static_cast<__mmask16>(~taken[v]);
      mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, choice + 16 * v));
    }
    const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    int64_t v = 0;
    __mmask16 hit = 0;
    for (; v < vectors && !hit; ++v) {
      const __mmask16 m = lanes(E, 16 * v) & static_cast<__mmask16>(~taken[v]);
      hit = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, choice + 16 * v), best, _CMP_EQ_OQ);
    }
    if (!hit) return false;
    const int lane = __builtin_ctz(hit);
    taken[v - 1] |= static_cast<uint16_t>(1u << lane);
    idx[j] = 16 * (v - 1) + lane;
  }
  return true;
}

void softmax_grad_row_avx512(const float* p, float* g, int64_t E) {
  __m512 dot = _mm512_setzero_ps();
  for (int64_t e = 0; e < E; e += 16) {
    const __mmask16 m = lanes(E, e);
    dot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + e), _mm512_maskz_loadu_ps(m, p + e), dot);
  }
  const __m512 d = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
  for (int64_t e = 0; e < E; e += 16) {
    const __mmask16 m = lanes(E, e);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + e);
    _mm512_mask_storeu_ps(g + e, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + e),
                                                  _mm512_sub_ps(gv, d)));
  }
}

}  // namespace gptcore
