// AVX512_BF16 GEMM for the bf16 MoE experts (see bf16_kernels.h): A = expert weight rows read in
// place, B = the tokens packed in 16-column panels. Unlike attention's bf16_gemm_avx512 (panels
// outer, rows inner) the weight rows are outer: a block of R rows stays in L1 while every token
// panel passes, each row is read from memory once, and the next block's rows are prefetched.
#include <immintrin.h>

#include <cstring>

#include "bf16_kernels.h"

namespace gptcore {
namespace {

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// R rows x NP panels over `pairs` pairs of k; prefetches the R rows after these.
template <int R, int NP>
void block(int64_t pairs, const uint16_t* a, int64_t lda, const uint32_t* bp, int64_t stride,
           float* c, int64_t ldc) {
  __m512 acc[R][NP];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    if (p % 16 == 0)  // one 64-byte line of each next row per 16 pairs
      for (int r = 0; r < R; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(a + (R + r) * lda + 2 * p), _MM_HINT_T0);
    __m512bh b[NP];
    for (int j = 0; j < NP; ++j) b[j] = as_bh(_mm512_loadu_si512(bp + j * stride + 16 * p));
    for (int r = 0; r < R; ++r) {
      uint32_t pair;
      std::memcpy(&pair, a + r * lda + 2 * p, 4);
      const __m512bh av = as_bh(_mm512_set1_epi32(static_cast<int>(pair)));
      for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, b[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NP; ++j) _mm512_storeu_ps(c + r * ldc + 16 * j, acc[r][j]);
}

// Rows [0, R) against every panel, in groups of NP (tails of 1..NP-1 panels).
template <int R, int NP>
void row_block(int64_t panels, int64_t pairs, const uint16_t* a, int64_t lda,
               const uint32_t* bp, float* c, int64_t ldc) {
  const int64_t stride = 16 * pairs;
  int64_t j = 0;
  for (; j + NP <= panels; j += NP) block<R, NP>(pairs, a, lda, bp + j * stride, stride, c + 16 * j, ldc);
  for (; j < panels; ++j) block<R, 1>(pairs, a, lda, bp + j * stride, stride, c + 16 * j, ldc);
}

template <int R, int NP>
void rows(int64_t M, int64_t panels, int64_t pairs, const uint16_t* a, int64_t lda,
          const uint32_t* bp, float* c, int64_t ldc) {
  int64_t m = 0;
  for (; m + R <= M; m += R) row_block<R, NP>(panels, pairs, a + m * lda, lda, bp, c + m * ldc, ldc);
  for (; m < M; ++m) row_block<1, NP>(panels, pairs, a + m * lda, lda, bp, c + m * ldc, ldc);
}

}  // namespace

void bf16_weight_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t* a, int64_t lda,
                             const uint32_t* bp, float* c, int64_t ldc) {
  const int64_t panels = (N + 15) / 16, pairs = K / 2;
  // 16-24 accumulators: 4 rows x 4 panels when there are 4+ panels, else 8 rows x 2-3
  if (panels >= 4) {
    rows<4, 4>(M, panels, pairs, a, lda, bp, c, ldc);
  } else if (panels == 3) {
    rows<8, 3>(M, panels, pairs, a, lda, bp, c, ldc);
  } else {
    rows<8, 2>(M, panels, pairs, a, lda, bp, c, ldc);
  }
}

}  // namespace gptcore
