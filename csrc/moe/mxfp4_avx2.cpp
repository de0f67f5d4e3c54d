// AVX2 MXFP4 dequantisation: a 3-bit code indexes an 8-entry table held in one register
// (vpermps), the sign bit is xor-ed in, and the e8m0 scale is one multiply.
#include <immintrin.h>

#include <cstring>

#include "mxfp4_kernels.h"

namespace gptcore {

// 8 packed bytes (16 codes) -> 16 floats times `scale`.
static inline void decode16(const uint8_t* bytes, __m256 table, __m256 scale, float* out) {
  uint64_t packed;
  std::memcpy(&packed, bytes, 8);
  // Spread the 16 nibbles into 16 bytes in element order: low nibble first.
  const __m128i raw = _mm_cvtsi64_si128(static_cast<long long>(packed));
  const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
  const __m128i codes = _mm_unpacklo_epi8(lo, hi);
  for (int half = 0; half < 2; ++half) {
    const __m256i c = _mm256_cvtepu8_epi32(half ? _mm_srli_si128(codes, 8) : codes);
    const __m256 mag = _mm256_permutevar8x32_ps(table, c);  // index uses the low 3 bits
    const __m256i sign = _mm256_slli_epi32(_mm256_srli_epi32(c, 3), 31);
    const __m256 val = _mm256_xor_ps(mag, _mm256_castsi256_ps(sign));
    _mm256_storeu_ps(out + 8 * half, _mm256_mul_ps(val, scale));
  }
}

void mxfp4_dequantize_row_avx2(const uint8_t* blocks, const uint8_t* scales, int64_t nblocks,
                               float* out) {
  const __m256 table = _mm256_loadu_ps(kE2M1);
  for (int64_t b = 0; b < nblocks; ++b) {
    uint32_t bits = static_cast<uint32_t>(scales[b]) << 23;  // 2^(s-127) as an fp32 bit pattern
    float scale;
    if (scales[b] == 0) {
      scale = 0x1p-127f;  // exponent field 0 is a subnormal, not 2^-127: spell it out
    } else {
      std::memcpy(&scale, &bits, 4);
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    decode16(blocks + 16 * b, table, vscale, out + 32 * b);
    decode16(blocks + 16 * b + 8, table, vscale, out + 32 * b + 16);
  }
}

}  // namespace gptcore
