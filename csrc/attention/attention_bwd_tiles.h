// The register-tile product the attention backward is built from (csrc/attention_bwd_cpu.cpp):
// all five of its products, S = Qs K^T, dP = dO V^T, dV += P^T dO, dK += dS^T Qs, dQ += dS K,
// are C (M x N) (+)= A B with A read through two strides and B row-major, so one kernel with a
// broadcast operand covers them: the transposed operands (P^T, dS^T) are read where they lie,
// and K^T, V^T are transposed once per key block. One file per ISA level, as attention_kernels.h.
#pragma once
#include <cstdint>

namespace gptcore {

// C (M x N, row stride ldc) = A B, or += when accumulate; A(r, k) = a[r * lda + k * a_step]
// (M x K), B (K x N, row stride ldb). N % 16 == 0 (padded head dims and key blocks). The sum
// over k runs in order, so the result does not depend on the blocking.
using BwdGemm = void (*)(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                         int64_t a_step, const float* b, int64_t ldb, float* c, int64_t ldc,
                         bool accumulate);

void bwd_gemm_portable(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                       int64_t a_step, const float* b, int64_t ldb, float* c, int64_t ldc,
                       bool accumulate);
void bwd_gemm_avx2(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, int64_t a_step,
                   const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);
void bwd_gemm_avx512(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                     int64_t a_step, const float* b, int64_t ldb, float* c, int64_t ldc,
                     bool accumulate);

}  // namespace gptcore
