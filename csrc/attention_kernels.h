// Attention tile micro-kernels on plain fp32 pointers, shared by the portable and AVX2 builds.
// Three GEMM shapes cover the forward and the flash-attention-2 backward, plus the row passes of
// the online softmax. No ATen here: csrc/attention_avx2.cpp includes this header.
#pragma once
#include <cstdint>

namespace gptcore {

// Rows of B per packed panel in the AVX2 gemm_abt, and the unit every padded dim rounds to.
constexpr int64_t kPanel = 16;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// All matrices are row-major fp32 with the given leading dimensions.
struct AttentionKernels {
  // C (M x N) = A (M x K) * B^T, B (N x K).
  void (*gemm_abt)(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float* c, int64_t ldc);
  // C (M x N) += A (M x K) * B (K x N).
  void (*gemm_ab_acc)(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc);
  // C (M x N) += A^T * B, A (K x M), B (K x N).
  void (*gemm_atb_acc)(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                       const float* b, int64_t ldb, float* c, int64_t ldc);
  // max of x[0..n) (-inf when n == 0).
  float (*row_max)(const float* x, int64_t n);
  // x[j] = exp(x[j] - shift) in place, shift finite; returns the sum. exp(-inf) gives 0.
  float (*exp_row)(float* x, int64_t n, float shift);
  // ds[j] = p[j] * (dp[j] - delta), in place in dp.
  void (*ds_row)(const float* p, float* dp, int64_t n, float delta);
};

extern const AttentionKernels kAttentionPortable;
extern const AttentionKernels kAttentionAvx2;

}  // namespace gptcore
