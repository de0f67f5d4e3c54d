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
// Top-k of choice[0, E) into idx[0, k), best first, ties to the lower index (a stable descending
// sort): k rounds of a vector max over the experts not yet taken, then its first lane.
// `taken`: (E + 15) / 16 masks of scratch. Returns false, leaving idx undefined, when a round
// finds no lane equal to the max (NaN in the row): the caller's scalar selection decides then.
bool top_k_avx512(const float* choice, int64_t E, int64_t k, int64_t* idx, uint16_t* taken);
// The softmax backward of one row in place: g = p * (g - <g, p>).
void softmax_grad_row_avx512(const float* p, float* g, int64_t E);

}  // namespace gptcore
