// AVX512_BF16 dot-product kernels (see bf16_kernels.h): register blocks of 4 weight rows x 4
// activation rows, 16 fp32 accumulators, 32 bf16 values of k per vdpbf16ps; with one or two
// activation rows (decode), 16 or 8 weight rows at a time.
#include <immintrin.h>

#include <algorithm>

#include "bf16_kernels.h"

namespace gptcore {
namespace {

// The 32 bf16 values at p, the lanes past n (< 32) zero.
inline __m512bh load_bf16(const uint16_t* p, __mmask32 mask) {
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, p));
}

// Sums of the 16 lanes of a, b, c, d as one vector (a_sum, b_sum, c_sum, d_sum).
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const auto fold = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  const __m256 ab = _mm256_hadd_ps(fold(a), fold(b)), cd = _mm256_hadd_ps(fold(c), fold(d));
  const __m256 s = _mm256_hadd_ps(ab, cd);  // per 128-bit half: a, b, c, d partial sums
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// R weight rows x NX activation rows (R <= 16; rows past R are zero and never stored).
template <int R, int NX>
void dot_block(const uint16_t* w, int64_t ldw, const uint16_t* x, int64_t ldx, int64_t K,
               float* out, int64_t ldo, bool accumulate) {
  // One flat array, every loop over it unrolled: GCC 12 keeps a 2-D array of vectors in memory.
  constexpr int kAcc = R > 8 ? 16 : R > 4 ? 8 : 4;
  __m512 acc[NX * kAcc];
#pragma GCC unroll 64
  for (int i = 0; i < NX * kAcc; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    const __mmask32 mask = K - k >= 32 ? ~__mmask32{0} : (__mmask32{1} << (K - k)) - 1;
    __m512bh wv[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) wv[r] = load_bf16(w + r * ldw + k, mask);
#pragma GCC unroll 4
    for (int i = 0; i < NX; ++i) {
      const __m512bh xv = load_bf16(x + i * ldx + k, mask);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[i * kAcc + r] = _mm512_dpbf16_ps(acc[i * kAcc + r], wv[r], xv);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < NX; ++i) {
#pragma GCC unroll 4
    for (int r0 = 0; r0 < R; r0 += 4) {
      const __mmask8 rows_mask = static_cast<__mmask8>((1u << std::min(4, R - r0)) - 1);
      const __m512* a = acc + i * kAcc + r0;
      __m128 s = reduce4(a[0], a[1], a[2], a[3]);
      float* o = out + i * ldo + r0;
      if (accumulate) s = _mm_add_ps(s, _mm_maskz_loadu_ps(rows_mask, o));
      _mm_mask_storeu_ps(o, rows_mask, s);
    }
  }
}

template <int R>
void dot_rows(const uint16_t* w, int64_t ldw, const uint16_t* x, int64_t ldx, int64_t nx,
              int64_t K, float* out, int64_t ldo, bool accumulate) {
  int64_t i = 0;
  for (; i + 4 <= nx; i += 4) dot_block<R, 4>(w, ldw, x + i * ldx, ldx, K, out + i * ldo, ldo, accumulate);
  const uint16_t* xi = x + i * ldx;
  float* oi = out + i * ldo;
  switch (nx - i) {
    case 3: dot_block<R, 3>(w, ldw, xi, ldx, K, oi, ldo, accumulate); break;
    case 2: dot_block<R, 2>(w, ldw, xi, ldx, K, oi, ldo, accumulate); break;
    case 1: dot_block<R, 1>(w, ldw, xi, ldx, K, oi, ldo, accumulate); break;
    default: break;
  }
}

}  // namespace

void bf16_dot_rows_avx512(const uint16_t* w, int64_t ldw, int64_t rows, const uint16_t* x,
                          int64_t ldx, int64_t nx, int64_t K, float* out, int64_t ldo,
                          bool accumulate) {
  int64_t r = 0;
  // Weight rows at decode are short streams (2 KB at K=1024) that the hardware prefetchers pick
  // up late: more of them in flight read faster, so 16 rows go together for one activation row
  // and 8 for two (docs/cpu-isa.md, "Measurements behind the code").
  if (nx == 1) {
    for (; r + 16 <= rows; r += 16) dot_block<16, 1>(w + r * ldw, ldw, x, ldx, K, out + r, ldo, accumulate);
    if (r + 8 <= rows) {
      dot_block<8, 1>(w + r * ldw, ldw, x, ldx, K, out + r, ldo, accumulate);
      r += 8;
    }
  } else if (nx == 2) {
    for (; r + 8 <= rows; r += 8) dot_block<8, 2>(w + r * ldw, ldw, x, ldx, K, out + r, ldo, accumulate);
  }
  for (; r + 4 <= rows; r += 4) dot_rows<4>(w + r * ldw, ldw, x, ldx, nx, K, out + r, ldo, accumulate);
  const uint16_t* wr = w + r * ldw;
  switch (rows - r) {
    case 3: dot_rows<3>(wr, ldw, x, ldx, nx, K, out + r, ldo, accumulate); break;
    case 2: dot_rows<2>(wr, ldw, x, ldx, nx, K, out + r, ldo, accumulate); break;
    case 1: dot_rows<1>(wr, ldw, x, ldx, nx, K, out + r, ldo, accumulate); break;
    default: break;
  }
}

void fp32_to_bf16_avx512(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i));
    _mm256_mask_storeu_epi16(dst + i, mask, reinterpret_cast<__m256i>(b));
  }
}

}  // namespace gptcore
