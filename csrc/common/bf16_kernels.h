// AVX512_BF16 dot-product kernels (vdpbf16ps: fp32 lanes accumulate pairs of bf16 products) on
// plain pointers, called only when use_avx512_bf16(). No ATen here: csrc/*_avx512.cpp include
// this header. bf16 values are passed as their raw bits (uint16_t).
#pragma once
#include <cstdint>

namespace gptcore {

// out[i * ldo + r] (+)= sum_k w[r * ldw + k] * x[i * ldx + k] for r < rows, i < nx, fp32
// accumulation. w and x rows are bf16 along k, which is the pair layout vdpbf16ps reads, so
// neither is repacked: each block of 4 weight rows streams once per block of 4 x rows.
// Any K (masked tail). accumulate: add to out instead of overwriting it.
void bf16_dot_rows_avx512(const uint16_t* w, int64_t ldw, int64_t rows, const uint16_t* x,
                          int64_t ldx, int64_t nx, int64_t K, float* out, int64_t ldo,
                          bool accumulate);

// n fp32 values -> bf16 bits, round to nearest even (vcvtneps2bf16).
void fp32_to_bf16_avx512(const float* src, int64_t n, uint16_t* dst);

// Packed B operand of bf16_gemm_avx512: panels of 16 columns, each ceil(K/2) rows of 16 u32
// (B[2p][n], B[2p+1][n]) pairs, the pad (odd K, columns past N) zero. bf16_panel_u32 gives
// its size in u32 for (K, N).
inline int64_t bf16_panel_u32(int64_t K, int64_t N) {
  return (N + 15) / 16 * 16 * ((K + 1) / 2);
}
// From B^T, row-major (N x K, row stride ld): attention's K tile (keys x head dim).
void bf16_pack_bt_avx512(const uint16_t* bt, int64_t ld, int64_t N, int64_t K, uint32_t* dst);
// From B, row-major (K x N, row stride ld): attention's V tile (keys x head dim).
void bf16_pack_b_avx512(const uint16_t* b, int64_t ld, int64_t K, int64_t N, uint32_t* dst);

// C (M x N, row stride ldc) = alpha * A B (+ C when accumulate), fp32 accumulation. A row-major
// bf16 (M x K, stride lda) with each row readable and zero up to round_up(K, 2); B packed as
// above. C is written for round_up(N, 16) columns (the pad gets alpha * 0).
void bf16_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t* a, int64_t lda,
                      const uint32_t* bp, float alpha, float* c, int64_t ldc, bool accumulate);

// C (M x N, row stride ldc) = A B for the MoE experts (moe_bf16_gemm_avx512.cpp): A the weight
// rows, bf16 (M x K, stride lda), K even; B packed as above. Written for round_up(N, 16) columns.
void bf16_weight_gemm_avx512(int64_t M, int64_t N, int64_t K, const uint16_t* a, int64_t lda,
                             const uint32_t* bp, float* c, int64_t ldc);

// GLU of an h^T tile (moe_bf16_glu_avx512.cpp) -> the packed B panels of the down projection.
// ht: fp32 rows of ldn tokens (n used, whole 16-token panels readable). Activation column c's
// gate is row c * row_step, its up row that + up_row (silu, gelu: row_step 1, up_row w;
// gpt_oss: 2, 1); their biases gate_bias[c * row_step], up_bias[c * row_step] (or null). act:
// 0 silu, 1 gelu (tanh), 2 gpt_oss. Writes pair q (c = 2q, 2q + 1) of token t (panel t / 16) at
// dst[t / 16 * 16 * pairs + 16 q + t % 16]; w even.
void bf16_glu_pack_avx512(int act, float alpha, float limit, const float* ht, int64_t ldn,
                          int64_t up_row, int64_t row_step, const float* gate_bias,
                          const float* up_bias, int64_t w, int64_t n, uint32_t* dst,
                          int64_t pairs);

}  // namespace gptcore
