// Plain-pointer kernels of the MoE experts (moe_avx2.cpp, mxfp4_avx2.cpp, mxfp4_avx512.cpp),
// each called only after its runtime CPU check, and the table that picks them by ISA level.
#pragma once
#include <cstdint>

namespace gptcore {

// n half-precision values (raw bits) -> fp32.
void bf16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst);
void fp16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst);

// Fused MXFP4 products for a few rows of activations (decode, small batches): each weight block
// is decoded in registers, never written out, and reused for a register block of activation
// rows; the results are those of the dequantised fp32 weights up to summation order.
// out[i * ldo + r] = sum_c W[r, c] * x_i[c] for r < rows, i < nx.
// W: `rows` rows of K values (K/2 packed bytes and K/32 scales each). x_i (row stride ldx) must
// be permuted within each block of 32: the 16 even elements first, then the 16 odd ones
// (mxfp4_permute_row), matching the nibble order. Called only when use_avx2() (mxfp4_avx2.cpp).
void mxfp4_matmul_avx2(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                       const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo);

// The same product with AVX-512 (mxfp4_avx512.cpp, called only when use_avx512()).
void mxfp4_matmul_avx512(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                         const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo);

// The kernels of the active ISA level that read expert weights in place, and the most rows per
// expert they take (fewer than the dequantised / converted tiles + sgemm would); a level without
// them has 0 rows and null kernels. Defined with the thresholds in moe_experts_cpu.cpp.
struct ExpertKernels {
  int64_t mxfp4_max_rows;  // mxfp4: the fused MXFP4 products above
  void (*mxfp4)(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo);
  int64_t f32_max_rows;         // f32_nt, f32_nn: the fp32 register blocks of f32_rows.h,
  int64_t f32_kmajor_max_rows;  // for row-major and K-major weights
  void (*f32_nt)(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx, const float* w,
                 int64_t ldw, float* out, int64_t ldo);
  void (*f32_nn)(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx, const float* w,
                 int64_t ldw, float* out, int64_t ldo);
};
const ExpertKernels& expert_kernels();

}  // namespace gptcore
