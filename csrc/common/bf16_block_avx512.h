// The vdpbf16ps register block both AVX512_BF16 GEMMs are built from (included by
// csrc/*_avx512.cpp only): R rows of A, their bf16 pairs broadcast, against NP panels of 16
// packed B columns, fp32 accumulators. The GEMMs differ in how they walk the blocks
// (bf16_gemm_avx512.cpp: panels outer; moe_bf16_gemm_avx512.cpp: weight rows outer).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace gptcore {

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// c[r, 16j + i] (+)= alpha * sum_p A pair p of row r . panel j pair p, for r < R, j < NP.
// kPrefetch: also pull the R rows after these into L1, one 64-byte line each per 16 pairs
// (weight rows streamed from memory once per block).
// The accumulators are one flat array and every loop over them is unrolled: GCC 12 keeps a
// 2-D array of vectors in memory, a load and a store around every vdpbf16ps.
template <int R, int NP, bool kPrefetch>
inline void bf16_block(int64_t pairs, const uint16_t* a, int64_t lda, const uint32_t* bp,
                       int64_t panel_stride, float alpha, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[R * NP];
#pragma GCC unroll 32
  for (int i = 0; i < R * NP; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    if (kPrefetch && p % 16 == 0) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(a + (R + r) * lda + 2 * p), _MM_HINT_T0);
    }
    __m512bh b[NP];
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) b[j] = as_bh(_mm512_loadu_si512(bp + j * panel_stride + 16 * p));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      uint32_t pair;
      std::memcpy(&pair, a + r * lda + 2 * p, 4);
      const __m512bh av = as_bh(_mm512_set1_epi32(static_cast<int>(pair)));
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) acc[r * NP + j] = _mm512_dpbf16_ps(acc[r * NP + j], av, b[j]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      float* dst = c + r * ldc + 16 * j;
      __m512 v = _mm512_mul_ps(acc[r * NP + j], scale);
      if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(dst));
      _mm512_storeu_ps(dst, v);
    }
  }
}

}  // namespace gptcore
