// AVX512_BF16 GEMM for attention tiles (see bf16_kernels.h): B packed in 16-column panels of
// bf16 pairs, A's pairs broadcast from its rows; register blocks of 8 rows x 32 columns (16
// fp32 accumulators), each vdpbf16ps doing 32 multiply-adds. The layout follows the VNNI
// operand order oneDNN's brgemm and SGLang's CPU kernels use for bf16 (pairs along k).
#include <immintrin.h>

#include "bf16_block_avx512.h"
#include "bf16_kernels.h"

namespace gptcore {
namespace {

constexpr int kRows = 8;

template <int NP>
void gemm_panels(int64_t M, int64_t pairs, const uint16_t* a, int64_t lda, const uint32_t* bp,
                 int64_t panel_stride, float alpha, float* c, int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + kRows <= M; m += kRows)
    bf16_block<kRows, NP, false>(pairs, a + m * lda, lda, bp, panel_stride, alpha, c + m * ldc,
                                 ldc, accumulate);
  const uint16_t* am = a + m * lda;
  float* cm = c + m * ldc;
  switch (M - m) {
#define GPTCORE_TAIL(R) \
  case R:                                                                                  \
    bf16_block<R, NP, false>(pairs, am, lda, bp, panel_stride, alpha, cm, ldc, accumulate); \
    break;
    GPTCORE_TAIL(1) GPTCORE_TAIL(2) GPTCORE_TAIL(3) GPTCORE_TAIL(4) GPTCORE_TAIL(5)
    GPTCORE_TAIL(6) GPTCORE_TAIL(7)
#undef GPTCORE_TAIL
    default: break;
  }
}

}  // namespace

void bf16_pack_bt_avx512(const uint16_t* bt, int64_t ld, int64_t N, int64_t K, uint32_t* dst) {
  const int64_t pairs = (K + 1) / 2, full = K / 2;
  for (int64_t n0 = 0; n0 < N; n0 += 16) {
    const int64_t cols = N - n0 < 16 ? N - n0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
    // u32 pair p of row n0 + j sits at element (n0 + j) * ld + 2p: gather 16 rows at once
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int>(ld)));
    const uint16_t* base = bt + n0 * ld;
    for (int64_t p = 0; p < full; ++p) {
      const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, rows,
                                                    base + 2 * p, 2);
      _mm512_storeu_si512(dst + 16 * p, v);
    }
    if (pairs > full) {  // odd K: the last value alone, its partner zero
      for (int64_t j = 0; j < 16; ++j) dst[16 * full + j] = j < cols ? base[j * ld + K - 1] : 0u;
    }
    dst += 16 * pairs;
  }
}

void bf16_pack_b_avx512(const uint16_t* b, int64_t ld, int64_t K, int64_t N, uint32_t* dst) {
  const int64_t pairs = (K + 1) / 2;
  for (int64_t n0 = 0; n0 < N; n0 += 16) {
    const int64_t cols = N - n0 < 16 ? N - n0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, b + 2 * p * ld + n0));
      const __m512i hi = 2 * p + 1 < K
          ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, b + (2 * p + 1) * ld + n0))
          : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + 16 * p, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    dst += 16 * pairs;
  }
}

void bf16_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t* a, int64_t lda,
                      const uint32_t* bp, float alpha, float* c, int64_t ldc, bool accumulate) {
  const int64_t pairs = (K + 1) / 2, panels = (N + 15) / 16, stride = 16 * pairs;
  int64_t j = 0;
  for (; j + 2 <= panels; j += 2)
    gemm_panels<2>(M, pairs, a, lda, bp + j * stride, stride, alpha, c + 16 * j, ldc, accumulate);
  if (j < panels)
    gemm_panels<1>(M, pairs, a, lda, bp + j * stride, stride, alpha, c + 16 * j, ldc, accumulate);
}

}  // namespace gptcore
