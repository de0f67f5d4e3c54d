// AVX-512 fused MXFP4 x fp32 products (see moe_kernels.h): each block of 32 weights is decoded in
// registers, the 4-bit code (sign included) indexing a 16-entry fp32 table with vpermps and the
// e8m0 scale multiplied in, which gives exactly the dequantised fp32 weight (the table values
// times a power of two); 16-wide FMAs then reuse it for a block of up to 4 activation rows.
#include <immintrin.h>

#include "moe_kernels.h"
#include "register_blocks.h"

namespace gptcore {
namespace {

// e2m1 by 4-bit code: bit 3 is the sign (OCP MX).
const float kCodeValues[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// 2^(s - 127) as fp32: its exponent bits for s >= 1; byte 0 is 2^-127, a subnormal float that
// the exponent field cannot express (OCP: the same value in every path).
inline __m512 block_scale(uint8_t s) {
  return s == 0 ? _mm512_set1_ps(0x1p-127f) : _mm512_castsi512_ps(_mm512_set1_epi32(s << 23));
}

// One block: 16 bytes -> the 16 even elements (low nibbles) and the 16 odd ones (high nibbles).
// `table` holds the 16 code values times the block's scale (exact: a power of two).
inline void decode_block(const uint8_t* bytes, __m512 table, __m512* even, __m512* odd) {
  const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
  // vpermps reads only the low 4 bits of each index: no mask needed for the low nibble
  *even = _mm512_permutexvar_ps(codes, table);
  *odd = _mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), table);
}

// R weight rows times NX activation rows, R * NX = 16 accumulators at most.
template <int R, int NX>
struct Block {
  static void run(const uint8_t* blocks, const uint8_t* scales, int64_t K, const float* x,
                  int64_t ldx, float* out, int64_t ldo) {
    const __m512 table = _mm512_loadu_ps(kCodeValues);
    const int64_t nblocks = K / 32;
    // One dimension, fully unrolled, as in every register block: as acc[R][NX] GCC 12 kept the
    // loop in registers but zeroed the array on the stack and stored it there for the
    // reduction, 48 zmm moves a call (objdump; docs/cpu-isa.md).
    __m512 acc[R * NX];
    #pragma GCC unroll 16
    for (int j = 0; j < R * NX; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblocks; ++b) {
      __m512 even[R], odd[R];
      #pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* bytes = blocks + r * K / 2 + 16 * b;
        // the same place in the next R rows: the weights stream from DRAM once per call (they
        // outgrow L3), and fetching them ahead is a clear gain
        // (docs/cpu-isa.md, "Measurements behind the code")
        if (b % register_blocks::kPrefetchEveryBlocks == 0)
          _mm_prefetch(reinterpret_cast<const char*>(bytes + R * K / 2), _MM_HINT_T0);
        decode_block(bytes, _mm512_mul_ps(table, block_scale(scales[r * nblocks + b])),
                     &even[r], &odd[r]);
      }
      #pragma GCC unroll 8
      for (int i = 0; i < NX; ++i) {
        const float* xb = x + i * ldx + 32 * b;  // permuted: 16 even elements, then 16 odd
        const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          acc[r * NX + i] = _mm512_fmadd_ps(even[r], x0, acc[r * NX + i]);
          acc[r * NX + i] = _mm512_fmadd_ps(odd[r], x1, acc[r * NX + i]);
        }
      }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < NX; ++i)
      #pragma GCC unroll 4
      for (int r = 0; r < R; ++r) out[i * ldo + r] = _mm512_reduce_add_ps(acc[r * NX + i]);
  }
};

}  // namespace

void mxfp4_matmul_avx512(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                         const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  // 16 accumulators either way; 2 x 8 decodes each weight block once for up to 8 rows, which at
  // 5 rows beats 4 x 4 blocks' 4-row pass plus 1-row pass
  // (docs/cpu-isa.md, "Measurements behind the code").
  using register_blocks::mxfp4_product;
  if (nx <= 4) {
    mxfp4_product<Block, 4, 4>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  } else {
    mxfp4_product<Block, 2, 8>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  }
}

}  // namespace gptcore
