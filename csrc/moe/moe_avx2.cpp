// AVX2 + F16C weight conversions for the MoE expert kernels (called only when use_avx2()).
#include <immintrin.h>

#include <cstring>

#include "moe_kernels.h"
#include "simd_avx2.h"

namespace gptcore {

void bf16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {  // bf16 is the top half of an fp32: widen and shift left by 16
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m256i f = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(f));
  }
  for (; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &bits, 4);
  }
}

void fp16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

}  // namespace gptcore

namespace gptcore {

namespace {

__m256 int8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

}  // namespace

void mxfp4_matvec_avx2(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                       const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  // e2m1 code -> 2 * value as int8 (exact); the factor 1/2 is folded into the block scale.
  const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const int64_t nblocks = K / 32;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* rb = blocks + r * K / 2;
    const uint8_t* rs = scales + r * nblocks;
    __m256 acc[kMatvecMaxX];
    for (int64_t i = 0; i < nx; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblocks; ++b) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rb + 16 * b));
      const __m128i even = _mm_shuffle_epi8(lut, _mm_and_si128(bytes, low4));
      const __m128i odd = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
      const __m256 w0 = int8_to_ps(even), w1 = int8_to_ps(_mm_srli_si128(even, 8));
      const __m256 w2 = int8_to_ps(odd), w3 = int8_to_ps(_mm_srli_si128(odd, 8));
      // 2^(s - 127) / 2 = 2^(s - 128): from its exponent bits where that is a normal float,
      // spelled out for s = 0 and 1, whose 2^-128 and 2^-127 are subnormal (OCP: byte 0 is
      // 2^-127, as in every other path)
      const __m256 scale =
          rs[b] >= 2 ? _mm256_castsi256_ps(_mm256_set1_epi32((rs[b] - 1) << 23))
                     : _mm256_set1_ps(rs[b] == 1 ? 0x1p-127f : 0x1p-128f);
      for (int64_t i = 0; i < nx; ++i) {
        const float* xb = x + i * ldx + 32 * b;  // permuted: 16 even elements, then 16 odd
        __m256 t = _mm256_mul_ps(w0, _mm256_loadu_ps(xb));
        t = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), t);
        t = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), t);
        t = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), t);
        acc[i] = _mm256_fmadd_ps(t, scale, acc[i]);
      }
    }
    for (int64_t i = 0; i < nx; ++i) out[i * ldo + r] = hsum(acc[i]);
  }
}

}  // namespace gptcore
