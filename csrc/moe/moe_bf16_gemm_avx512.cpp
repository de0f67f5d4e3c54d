// AVX512_BF16 GEMM for the bf16 MoE experts (see bf16_kernels.h): A = expert weight rows read in
// place, B = the tokens packed in 16-column panels. Unlike attention's bf16_gemm_avx512 (panels
// outer, rows inner) the weight rows are outer: a block of R rows stays in L1 while every token
// panel passes, each row is read from memory once, and the next block's rows are prefetched.
#include <immintrin.h>

#include "bf16_block_avx512.h"
#include "bf16_kernels.h"

namespace gptcore {
namespace {

// Rows [0, R) against every panel, in groups of NP (tails of 1..NP-1 panels).
template <int R, int NP>
void row_block(int64_t panels, int64_t pairs, const uint16_t* a, int64_t lda,
               const uint32_t* bp, float* c, int64_t ldc) {
  const int64_t stride = 16 * pairs;
  int64_t j = 0;
  for (; j + NP <= panels; j += NP)
    bf16_block<R, NP, true>(pairs, a, lda, bp + j * stride, stride, 1.0f, c + 16 * j, ldc, false);
  for (; j < panels; ++j)
    bf16_block<R, 1, true>(pairs, a, lda, bp + j * stride, stride, 1.0f, c + 16 * j, ldc, false);
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
