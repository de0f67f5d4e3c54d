// bf16 MoE experts through AVX512_BF16 dot products (csrc/moe_bf16_cpu.cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include "moe_experts.h"

namespace gptcore {

// Average rows per expert (T * top_k / E) up to which the fused bf16 dot kernel runs; above it
// the blocked GEMMs (bf16_blocked_experts) do. At 1-2 rows both stream the weights and the dot
// kernel streams faster (the blocked GEMMs pad each expert's tokens to 16); at 4 rows the dot
// kernel's 4x4 blocks are compute-bound and the blocked GEMMs win
// (docs/cpu-isa.md, "Measurements behind the code").
constexpr int64_t kBf16FusedMaxRows = 2;

// Average rows per expert from which, on a CPU where oneDNN's bf16 matmul runs on AMX tiles
// (onednn_bf16_on_amx), whole experts through at::mm beat the blocked vdpbf16ps GEMMs (measured
// crossover 4-8 rows on a Sapphire Rapids class Xeon; docs/cpu-isa.md).
constexpr int64_t kBf16AmxMinRows = 8;

// The raw bits of a contiguous bf16 tensor, as the vdpbf16ps kernels (bf16_kernels.h) take them.
inline const uint16_t* bf16_bits(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>());
}

// Whether bf16_fused_experts runs: AVX512_BF16 active, x and both weights bf16, few rows (or
// any number when H or I is odd).
bool bf16_fused_experts_apply(const at::Tensor& x, const at::Tensor& gate_up,
                              const at::Tensor& down, int64_t top_k);

// y (T, H) bf16 = sum over slots of weights * expert(x); gate_up (E, 2I, H), down (E, H, I)
// bf16, each contiguous or (kmajor) the transposed view of a contiguous (E, K, N); biases
// (E, 2I), (E, H) fp32, bf16 or fp16, or undefined. Nothing is copied or converted.
at::Tensor bf16_fused_experts(const at::Tensor& x, const at::Tensor& indices,
                              const at::Tensor& weights, const at::Tensor& gate_up,
                              const at::Tensor& down, const at::Tensor& gate_up_bias,
                              const at::Tensor& down_bias, Activation act, float alpha,
                              float limit, bool gate_up_kmajor, bool down_kmajor);

// Above kBf16FusedMaxRows (csrc/moe_bf16_blocked_cpu.cpp): whether the blocked vdpbf16ps GEMMs
// run (AVX512_BF16, x and both weights bf16, H and I even, and not kBf16AmxMinRows rows per
// expert on an AMX CPU), and the same y as bf16_fused_experts.
bool bf16_blocked_experts_apply(const at::Tensor& x, const at::Tensor& gate_up,
                                const at::Tensor& down, int64_t top_k);
at::Tensor bf16_blocked_experts(const at::Tensor& x, const at::Tensor& indices,
                                const at::Tensor& weights, const at::Tensor& gate_up,
                                const at::Tensor& down, const at::Tensor& gate_up_bias,
                                const at::Tensor& down_bias, Activation act, float alpha,
                                float limit);

}  // namespace gptcore
