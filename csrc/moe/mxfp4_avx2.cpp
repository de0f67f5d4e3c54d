// AVX2 MXFP4, the twin of mxfp4_avx512.cpp: dequantisation, and the fused MXFP4 x fp32 products
// of the experts (see moe_kernels.h). A block of 32 weights is decoded in registers: a 16-entry
// byte table (vpshufb) maps each 4-bit code, sign included, to twice its e2m1 value as an int8,
// which widens and converts to fp32 exactly; the block's e8m0 scale (halved) multiplies the
// 8-wide dot products once per block and activation row, exact as a power of two. Each decoded
// block feeds every activation row of a register block; the next rows' blocks are prefetched.
// (The 8-entry vpermps table with the sign xor-ed in, the 512-bit kernel's way, ran ~10% slower
// here at one activation row: docs/cpu-isa.md.)
#include <immintrin.h>

#include "moe_kernels.h"
#include "mxfp4_kernels.h"
#include "register_blocks.h"
#include "simd_avx2.h"

namespace gptcore {
namespace {

// One block (16 packed bytes) -> 2x its 32 values, in x's permuted order: w[0] and w[2] the
// even elements 0-7 and 8-15 (low nibbles), w[1] and w[3] the odd ones. A 16-entry byte table
// (vpshufb) gives 2x each code's value as an int8, sign included, which converts exactly.
inline void decode_block(const uint8_t* bytes, __m256 w[4]) {
  const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __m128i even = _mm_shuffle_epi8(lut, _mm_and_si128(packed, low4));
  const __m128i odd = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(packed, 4), low4));
  const __m128i parts[4] = {even, odd, _mm_srli_si128(even, 8), _mm_srli_si128(odd, 8)};
  #pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[j]));
}

// The block's scale over 2 (decode_block's values are doubled): 2^(s - 128), from its exponent
// bits where that is a normal float, spelled out for s = 0 and 1, whose 2^-128 and 2^-127 are
// subnormal (OCP: byte 0 is 2^-127, the same value in every path).
inline __m256 half_scale(uint8_t s) {
  return s >= 2 ? _mm256_castsi256_ps(_mm256_set1_epi32((s - 1) << 23))
                : _mm256_set1_ps(s == 1 ? 0x1p-127f : 0x1p-128f);
}

// R weight rows times NX activation rows: R * NX accumulators, 8 at most (with the 4 decoded
// vectors, the scale and a partial sum, 16 ymm registers hold no more).
template <int R, int NX>
struct Block {
  static void run(const uint8_t* blocks, const uint8_t* scales, int64_t K, const float* x,
                  int64_t ldx, float* out, int64_t ldo) {
    const int64_t nblocks = K / 32;
    __m256 acc[R * NX];  // one dimension, fully unrolled: see the note in mxfp4_avx512.cpp
    #pragma GCC unroll 8
    for (int j = 0; j < R * NX; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblocks; ++b) {
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        // a compiler barrier (no instruction): each row loads the x vectors again from L1.
        // Without it GCC kept the block's x vectors for every row, 4 NX ymm, and spilled
        // accumulators to the stack (objdump: 26-41 stack accesses per loop iteration at NX=4)
        asm volatile("" ::: "memory");
        const uint8_t* bytes = blocks + r * K / 2 + 16 * b;
        // the same place in the next R rows, as mxfp4_avx512.cpp does
        // (docs/cpu-isa.md, "Measurements behind the code")
        if (b % register_blocks::kPrefetchEveryBlocks == 0)
          _mm_prefetch(reinterpret_cast<const char*>(bytes + R * K / 2), _MM_HINT_T0);
        __m256 w[4];
        decode_block(bytes, w);
        const __m256 scale = half_scale(scales[r * nblocks + b]);
        #pragma GCC unroll 8
        for (int i = 0; i < NX; ++i) {
          // x is permuted within each block: the 16 even elements, then the 16 odd ones
          const float* xb = x + i * ldx + 32 * b;
          __m256 t = _mm256_mul_ps(w[0], _mm256_loadu_ps(xb));
          t = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xb + 16), t);
          t = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xb + 8), t);
          t = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xb + 24), t);
          // times a power of two: exact but for overflow, which needs |x| near the fp32 limit
          acc[r * NX + i] = _mm256_fmadd_ps(t, scale, acc[r * NX + i]);
        }
      }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < NX; ++i)
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r) out[i * ldo + r] = hsum(acc[r * NX + i]);
  }
};

}  // namespace

void mxfp4_dequantize_row_avx2(const uint8_t* blocks, const uint8_t* scales, int64_t nblocks,
                               float* out) {
  for (int64_t b = 0; b < nblocks; ++b) {
    __m256 w[4];
    decode_block(blocks + 16 * b, w);
    const __m256 scale = half_scale(scales[b]);
    for (int half = 0; half < 2; ++half) {  // elements 16 half + 2j and 16 half + 2j + 1, j < 8
      const __m256 even = _mm256_mul_ps(w[2 * half], scale);
      const __m256 odd = _mm256_mul_ps(w[2 * half + 1], scale);
      const __m256 lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);
      float* o = out + 32 * b + 16 * half;
      _mm256_storeu_ps(o, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
  }
}

void mxfp4_matmul_avx2(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                       const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  using register_blocks::mxfp4_product;
  // 8 accumulators in every shape: 8 independent FMA chains cover the FMA latency. One
  // activation row streams 8 weight rows at once; more rows reuse each decoded vector.
  if (nx == 1) {
    mxfp4_product<Block, 8, 1>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  } else if (nx == 2) {
    mxfp4_product<Block, 4, 2>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  } else if (nx <= 4) {
    mxfp4_product<Block, 2, 4>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  } else {
    mxfp4_product<Block, 1, 8>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  }
}

}  // namespace gptcore
