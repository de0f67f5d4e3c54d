// AVX-512 register tiles of the attention backward's products (attention_bwd_tiles.h): 6 rows
// x 4 vectors (64 columns), 24 zmm accumulators, B's 4 vectors and one broadcast of A.
// Replaces per-tile MKL sgemm calls, whose call and packing overhead dominated the 64 x 64
// tiles of the backward (and, at S = 64, the whole backward).
#include <immintrin.h>

#include <algorithm>

#include "attention_bwd_tiles.h"

namespace gptcore {
namespace {

constexpr int kRows = 6;

// R rows x V vectors of C. The accumulators are one flat array and every loop over them is
// unrolled: GCC 12 keeps a 2-D array of vectors in memory (csrc/common/bf16_block_avx512.h).
template <int R, int V>
inline void tile(int64_t K, const float* a, int64_t lda, int64_t a_step, const float* b,
                 int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[R * V];
#pragma GCC unroll 32
  for (int i = 0; i < R * V; ++i)
    acc[i] = accumulate ? _mm512_loadu_ps(c + (i / V) * ldc + 16 * (i % V)) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * lda + k * a_step]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r * V + v] = _mm512_fmadd_ps(ar, bv[v], acc[r * V + v]);
    }
  }
#pragma GCC unroll 32
  for (int i = 0; i < R * V; ++i) _mm512_storeu_ps(c + (i / V) * ldc + 16 * (i % V), acc[i]);
}

template <int R>
inline void tile_rows(int V, int64_t K, const float* a, int64_t lda, int64_t a_step,
                      const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  switch (V) {
    case 4: tile<R, 4>(K, a, lda, a_step, b, ldb, c, ldc, accumulate); break;
    case 3: tile<R, 3>(K, a, lda, a_step, b, ldb, c, ldc, accumulate); break;
    case 2: tile<R, 2>(K, a, lda, a_step, b, ldb, c, ldc, accumulate); break;
    default: tile<R, 1>(K, a, lda, a_step, b, ldb, c, ldc, accumulate); break;
  }
}

}  // namespace

void bwd_gemm_avx512(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                     int64_t a_step, const float* b, int64_t ldb, float* c, int64_t ldc,
                     bool accumulate) {
  for (int64_t n = 0; n < N; n += 64) {  // B's 64 columns (K x 256 bytes) stay in L1
    const int V = static_cast<int>(std::min<int64_t>(64, N - n) / 16);
    int64_t m = 0;
    for (; m + kRows <= M; m += kRows)
      tile_rows<kRows>(V, K, a + m * lda, lda, a_step, b + n, ldb, c + m * ldc + n, ldc, accumulate);
    const float* am = a + m * lda;
    float* cm = c + m * ldc + n;
    switch (M - m) {
      case 5: tile_rows<5>(V, K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 4: tile_rows<4>(V, K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 3: tile_rows<3>(V, K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 2: tile_rows<2>(V, K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      case 1: tile_rows<1>(V, K, am, lda, a_step, b + n, ldb, cm, ldc, accumulate); break;
      default: break;
    }
  }
}

}  // namespace gptcore
