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

}  // namespace gptcore
