// AVX2 + FMA register tiles of the attention backward's products (attention_bwd_tiles.h): 6
// rows x 2 vectors (16 columns), 12 ymm accumulators, B's 2 vectors and one broadcast of A, as
// the forward's AVX2 tiles (csrc/attention_avx2.cpp). Replaces per-tile MKL sgemm calls.
#include <immintrin.h>

#include "attention_bwd_tiles.h"

namespace gptcore {
namespace {

constexpr int kRows = 6;

// R rows x 16 columns of C; the accumulators one flat array, every loop over it unrolled (GCC
// keeps a 2-D array of vectors in memory).
template <int R>
inline void tile(int64_t K, const float* a, int64_t lda, int64_t a_step, const float* b,
                 int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  __m256 acc[2 * R];
#pragma GCC unroll 16
  for (int i = 0; i < 2 * R; ++i)
    acc[i] = accumulate ? _mm256_loadu_ps(c + (i / 2) * ldc + 8 * (i % 2)) : _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * lda + k * a_step);
      acc[2 * r] = _mm256_fmadd_ps(ar, b0, acc[2 * r]);
      acc[2 * r + 1] = _mm256_fmadd_ps(ar, b1, acc[2 * r + 1]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < 2 * R; ++i) _mm256_storeu_ps(c + (i / 2) * ldc + 8 * (i % 2), acc[i]);
}

}  // namespace

void bwd_gemm_avx2(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, int64_t a_step,
                   const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t n = 0; n < N; n += 16) {
    int64_t m = 0;
    for (; m + kRows <= M; m += kRows)
      tile<kRows>(K, a + m * lda, lda, a_step, b + n, ldb, c + m * ldc + n, ldc, accumulate);
    const float* am = a + m * lda;
    float* cm = c + m * ldc + n;
    switch (M - m) {
      case 5: tile<5>(K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 4: tile<4>(K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 3: tile<3>(K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 2: tile<2>(K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 1: tile<1>(K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      default: break;
    }
  }
}

}  // namespace gptcore
