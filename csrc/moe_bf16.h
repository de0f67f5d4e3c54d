// bf16 MoE experts through AVX512_BF16 dot products (csrc/moe_bf16_cpu.cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include "moe_experts.h"

namespace gptcore {

// Average rows per expert (T * top_k / E) up to which the fused bf16 kernel runs; above it
// oneDNN's bf16 GEMMs (at::mm per expert) take over. H1024 I2816 E8 top-2 against oneDNN on
// one thread (CPU time, shared machine): 4 rows (T=16) 15.3 vs 15.8 ms, 8 rows 22.7 vs 19.0,
// 16 rows 39 vs 25: our 4x4 dot blocks reach ~60 GFLOP/s where oneDNN's packed GEMM reaches
// ~120. With both threads (wall clock, interleaved) the fused kernel also saves the per-expert
// calls' synchronisation: T=16 89 ms vs 424 ms (oneDNN) vs 288 ms (Hugging Face grouped_mm).
constexpr int64_t kBf16FusedMaxRows = 4;

// Whether bf16_fused_experts runs: AVX512_BF16 active, x and both weights bf16, few rows.
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
// run (AVX512_BF16, x and both weights bf16, H and I even), and the same y as bf16_fused_experts.
bool bf16_blocked_experts_apply(const at::Tensor& x, const at::Tensor& gate_up,
                                const at::Tensor& down);
at::Tensor bf16_blocked_experts(const at::Tensor& x, const at::Tensor& indices,
                                const at::Tensor& weights, const at::Tensor& gate_up,
                                const at::Tensor& down, const at::Tensor& gate_up_bias,
                                const at::Tensor& down_bias, Activation act, float alpha,
                                float limit);

}  // namespace gptcore
