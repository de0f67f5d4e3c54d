// Plain-pointer helpers of the MoE expert kernels, built twice: portable and AVX2 (moe_avx2.cpp).
#pragma once
#include <cstdint>

namespace gptcore {

// n half-precision values (raw bits) -> fp32.
void bf16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst);
void fp16_to_fp32_avx2(const uint16_t* src, int64_t n, float* dst);

}  // namespace gptcore
