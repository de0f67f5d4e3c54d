// AVX-512 fused MXFP4 x fp32 products (see moe_kernels.h): each block of 32 weights is decoded in
// registers, the 4-bit code (sign included) indexing a 16-entry fp32 table with vpermps and the
// e8m0 scale multiplied in, which gives exactly the dequantised fp32 weight (the table values
// times a power of two); 16-wide FMAs then reuse it for a block of up to 4 activation rows.
#include <immintrin.h>

#include <algorithm>

#include "moe_kernels.h"

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

template <int R, int NX>
void block(const uint8_t* blocks, const uint8_t* scales, int64_t K, const float* x, int64_t ldx,
           float* out, int64_t ldo) {
  const __m512 table = _mm512_loadu_ps(kCodeValues);
  const int64_t nblocks = K / 32;
  __m512 acc[R][NX];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < NX; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    __m512 even[R], odd[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* bytes = blocks + r * K / 2 + 16 * b;
      // the same place in the next R rows: the weights stream from DRAM once per call (they
      // outgrow L3), and fetching them ahead is a clear gain
      // (docs/cpu-isa.md, "Measurements behind the code")
      if (b % 4 == 0) _mm_prefetch(reinterpret_cast<const char*>(bytes + R * K / 2), _MM_HINT_T0);
      decode_block(bytes, _mm512_mul_ps(table, block_scale(scales[r * nblocks + b])), &even[r],
                   &odd[r]);
    }
    for (int i = 0; i < NX; ++i) {
      const float* xb = x + i * ldx + 32 * b;  // permuted: 16 even elements, then 16 odd
      const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
      for (int r = 0; r < R; ++r) {
        acc[r][i] = _mm512_fmadd_ps(even[r], x0, acc[r][i]);
        acc[r][i] = _mm512_fmadd_ps(odd[r], x1, acc[r][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < NX; ++i) out[i * ldo + r] = _mm512_reduce_add_ps(acc[r][i]);
}

// R weight rows times a block of NX activation rows, NX < NXMAX (tails) or = NXMAX.
template <int R, int NX>
void x_tail(const uint8_t* blocks, const uint8_t* scales, int64_t K, const float* x,
            int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  if constexpr (NX > 0) {
    if (nx == NX) return block<R, NX>(blocks, scales, K, x, ldx, out, ldo);
    x_tail<R, NX - 1>(blocks, scales, K, x, ldx, nx, out, ldo);
  }
}

// R weight rows times all nx activation rows, in blocks of up to NXMAX rows (the decoded weights
// are reused within a block and decoded again for the next).
template <int R, int NXMAX>
void weight_rows(const uint8_t* blocks, const uint8_t* scales, int64_t K, const float* x,
                 int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  for (int64_t i = 0; i < nx; i += NXMAX)
    x_tail<R, NXMAX>(blocks, scales, K, x + i * ldx, ldx, std::min<int64_t>(NXMAX, nx - i),
                     out + i * ldo, ldo);
}

// Register blocks of R weight rows (and the tails below R) over blocks of NXMAX x rows.
template <int R, int NXMAX>
void product(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
             const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  const int64_t row_bytes = K / 2, row_scales = K / 32;
  int64_t r = 0;
  for (; r + R <= rows; r += R)
    weight_rows<R, NXMAX>(blocks + r * row_bytes, scales + r * row_scales, K, x, ldx, nx,
                          out + r, ldo);
  for (; r < rows; ++r)
    weight_rows<1, NXMAX>(blocks + r * row_bytes, scales + r * row_scales, K, x, ldx, nx,
                          out + r, ldo);
}

}  // namespace

void mxfp4_matmul_avx512(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                         const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  // 16 accumulators either way; 2 x 8 decodes each weight block once for up to 8 rows, which at
  // 5 rows beats 4 x 4 blocks' 4-row pass plus 1-row pass
  // (docs/cpu-isa.md, "Measurements behind the code").
  if (nx <= 4) {
    product<4, 4>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  } else {
    product<2, 8>(blocks, scales, rows, K, x, ldx, nx, out, ldo);
  }
}

}  // namespace gptcore
