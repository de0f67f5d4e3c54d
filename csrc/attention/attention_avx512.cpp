// AVX-512 attention row kernels (the online-softmax passes and the backward's dS) and the
// small-row GEMMs of decode, with masked tails instead of scalar remainders. Tiles of 7 to 15
// rows (below the column layout's 16) keep the AVX2 register tiles (csrc/attention_avx2.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "attention_kernels.h"
#include "simd_avx512.h"

namespace gptcore {
namespace {

constexpr int kDotRows = 6;

float row_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + j));
  if (j < n) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(m, first_lanes(n - j), x + j));
  return _mm512_reduce_max_ps(m);
}

float exp_row(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j), s));
    _mm512_storeu_ps(x + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < n) {
    const __mmask16 tail = first_lanes(n - j);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, x + j);
    const __m512 e = exp512(_mm512_sub_ps(v, s));  // 0 in the lanes past n
    _mm512_mask_storeu_ps(x + j, tail, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

void ds_row(const float* p, float* dp, int64_t n, float delta) {
  const __m512 d = _mm512_set1_ps(delta);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 lanes = n - j >= 16 ? __mmask16(0xffff) : first_lanes(n - j);
    const __m512 pv = _mm512_maskz_loadu_ps(lanes, p + j);
    const __m512 dv = _mm512_maskz_loadu_ps(lanes, dp + j);
    _mm512_mask_storeu_ps(dp + j, lanes, _mm512_mul_ps(pv, _mm512_sub_ps(dv, d)));
  }
}

// R rows of A against every row of B by dot products along K (a decode tile: a few query rows,
// thousands of keys): each B row is loaded once, the K tail through a lane mask.
template <int R>
void abt_dots(int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
              float* c, int64_t ldc) {
  const __mmask16 tail = first_lanes(K % 16);
  for (int64_t n = 0; n < N; ++n) {
    const float* brow = b + n * ldb;
    if (n + 4 < N) _mm_prefetch(reinterpret_cast<const char*>(brow + 4 * ldb), _MM_HINT_T0);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m512 bv = _mm512_loadu_ps(brow + k);
      for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(a + r * lda + k), bv, acc[r]);
    }
    if (k < K) {
      const __m512 bv = _mm512_maskz_loadu_ps(tail, brow + k);
      for (int r = 0; r < R; ++r)
        acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, a + r * lda + k), bv, acc[r]);
    }
    for (int r = 0; r < R; ++r) c[r * ldc + n] = _mm512_reduce_add_ps(acc[r]);
  }
}

// R rows x 16 columns of C += A rows times B (K x 16, row stride ldb).
template <int R>
void ab_tile(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
             int64_t ldc) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_loadu_ps(c + r * ldc);
  for (int64_t k = 0; k < K; ++k) {
    const __m512 bv = _mm512_loadu_ps(b + k * ldb);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + k]), bv, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(c + r * ldc, acc[r]);
}

template <template <int> class Fn, typename... Args>
void for_rows(int64_t rows, Args... args) {
  switch (rows) {
    case 6: Fn<6>::run(args...); break;
    case 5: Fn<5>::run(args...); break;
    case 4: Fn<4>::run(args...); break;
    case 3: Fn<3>::run(args...); break;
    case 2: Fn<2>::run(args...); break;
    case 1: Fn<1>::run(args...); break;
    default: break;
  }
}

template <int R>
struct Dots {
  static void run(int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
                  float* c, int64_t ldc) {
    abt_dots<R>(N, K, a, lda, b, ldb, c, ldc);
  }
};

template <int R>
struct AbTile {
  static void run(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                  int64_t ldc) {
    ab_tile<R>(K, a, lda, b, ldb, c, ldc);
  }
};

void gemm_abt(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* c, int64_t ldc) {
  if (M > kDotRows) return kAttentionAvx2.gemm_abt(M, N, K, a, lda, b, ldb, c, ldc);
  for_rows<Dots>(M, N, K, a, lda, b, ldb, c, ldc);
}

// For a few rows of A (decode) B is read from DRAM once: it is taken 16 rows at a time,
// prefetched, then reused from L1 by every 16-column pass. N % 16 == 0 (the padded head dim).
void gemm_ab_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  if (M > kDotRows) return kAttentionAvx2.gemm_ab_acc(M, N, K, a, lda, b, ldb, c, ldc);
  constexpr int64_t kChunk = 16;
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t kc = std::min(kChunk, K - k0);
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t n = 0; n < N; n += 16)
        _mm_prefetch(reinterpret_cast<const char*>(b + (k0 + k) * ldb + n), _MM_HINT_T0);
    for (int64_t n = 0; n < N; n += 16)
      for_rows<AbTile>(M, kc, a + k0, lda, b + k0 * ldb + n, ldb, c + n, ldc);
  }
}

}  // namespace

const AttentionKernels kAttentionAvx512 = {gemm_abt, gemm_ab_acc, row_max, exp_row, ds_row};

}  // namespace gptcore
