// bf16 MoE experts through AVX512_BF16 dot products (csrc/moe_bf16_cpu.cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include "moe_experts.h"

namespace gptcore {

// Average rows per expert (T * top_k / E) up to which the fused bf16 kernel runs; above it
// oneDNN's bf16 GEMMs (at::mm per expert) take over.
constexpr int64_t kBf16FusedMaxRows = 8;

// Whether bf16_fused_experts runs: AVX512_BF16 active, x and both weights bf16, few rows.
bool bf16_fused_experts_apply(const at::Tensor& x, const at::Tensor& gate_up,
                              const at::Tensor& down, int64_t top_k);

// y (T, H) bf16 = sum over slots of weights * expert(x); gate_up (E, 2I, H), down (E, H, I)
// bf16 contiguous, biases fp32 (E, 2I), (E, H) or undefined.
at::Tensor bf16_fused_experts(const at::Tensor& x, const at::Tensor& indices,
                              const at::Tensor& weights, const at::Tensor& gate_up,
                              const at::Tensor& down, const at::Tensor& gate_up_bias,
                              const at::Tensor& down_bias, Activation act, float alpha,
                              float limit);

}  // namespace gptcore
