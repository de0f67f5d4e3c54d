// Row passes of MoE routing (csrc/route_cpu.cpp) in AVX-512 (csrc/route_avx512.cpp), called
// only when use_avx512(). E values per row, any E >= 1: masked tails, no scalar remainder.
// No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

// probs = softmax(row): max-subtracted, exp within 2 ulp (subnormal results kept, as torch).
void softmax_row_avx512(const float* row, int64_t E, float* probs);
// score = sigmoid(logit) (0 where exp(-logit) overflows fp32, as torch); choice = score + bias,
// or score when bias is null.
void sigmoid_row_avx512(const float* logit, const float* bias, int64_t E, float* score,
                        float* choice);
// The softmax backward of one row in place: g = p * (g - <g, p>).
void softmax_grad_row_avx512(const float* p, float* g, int64_t E);

}  // namespace gptcore
