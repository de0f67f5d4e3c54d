// Plain-pointer helpers of the MoE expert kernels, built twice: portable and AVX2 (moe_avx2.cpp).
#pragma once
#include <cstdint>

namespace gptcore {

// n half-precision values (raw bits) -> fp32.
void bf16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst);
void fp16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst);

// Fused MXFP4 matrix-vector products for a few rows of activations (decode): dequantises each
// weight block in registers and never writes it out. out[i * ldo + r] = sum_c W[r, c] * x_i[c]
// for r < rows, i < nx <= kMatvecMaxX. W: `rows` rows of K values (K/2 packed bytes and K/32
// scales each). x_i (row stride ldx) must be permuted within each block of 32: the 16 even
// elements first, then the 16 odd ones (mxfp4_permute_row), matching the nibble order.
constexpr int64_t kMatvecMaxX = 4;
void mxfp4_matvec_avx2(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                       const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo);

// The same product with AVX-512 (mxfp4_avx512.cpp, called only when use_avx512()), for any nx:
// weights decoded exactly to their fp32 values, reused across blocks of 4 activation rows.
void mxfp4_matmul_avx512(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                         const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo);

}  // namespace gptcore
