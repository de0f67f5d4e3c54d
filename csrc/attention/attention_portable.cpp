// Portable attention micro-kernels: the plain loops the AVX2 kernels must agree with (the
// compiler vectorises them for the baseline ISA). Same contracts as attention_kernels.h.
#include <algorithm>
#include <cmath>

#include "attention_bwd_tiles.h"
#include "attention_kernels.h"

namespace gptcore {
namespace {

void gemm_abt(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* c, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += a[m * lda + k] * b[n * ldb + k];
      c[m * ldc + n] = acc;
    }
}

void gemm_ab_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    float* crow = c + m * ldc;
    for (int64_t k = 0; k < K; ++k) {
      const float am = a[m * lda + k];
      const float* brow = b + k * ldb;
      for (int64_t n = 0; n < N; ++n) crow[n] += am * brow[n];
    }
  }
}

float row_max(const float* x, int64_t n) {
  float best = -INFINITY;
  for (int64_t j = 0; j < n; ++j) best = std::fmax(best, x[j]);
  return best;
}

float exp_row(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

void ds_row(const float* p, float* dp, int64_t n, float delta) {
  for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - delta);
}

}  // namespace

void bwd_gemm_portable(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                       int64_t a_step, const float* b, int64_t ldb, float* c, int64_t ldc,
                       bool accumulate) {
  for (int64_t m = 0; m < M; ++m) {
    float* crow = c + m * ldc;
    if (!accumulate) std::fill(crow, crow + N, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float amk = a[m * lda + k * a_step];
      const float* brow = b + k * ldb;
      for (int64_t n = 0; n < N; ++n) crow[n] += amk * brow[n];
    }
  }
}

const AttentionKernels kAttentionPortable = {gemm_abt, gemm_ab_acc, row_max, exp_row, ds_row};

}  // namespace gptcore
