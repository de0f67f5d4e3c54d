// The attention tile GEMMs through the BLAS sgemm that torch links (MKL in our build), called
// per tile from inside the parallel region (MKL then runs single-threaded). Row-major operands
// map onto column-major sgemm by computing the transposed product. ATen does not export its
// cpublas wrapper, so sgemm_ is looked up in libtorch_cpu at run time; without it our own
// AVX2 micro-kernels run.
#include <dlfcn.h>

#include "attention_common.h"

namespace gptcore::attn {
namespace {

using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                       const float*, const int*, const float*, const int*, const float*, float*,
                       const int*);

Sgemm find_sgemm() {
  void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  return lib ? reinterpret_cast<Sgemm>(dlsym(lib, "sgemm_")) : nullptr;
}

const Sgemm sgemm = find_sgemm();

// Column-major C (m x n) = op(A) op(B) + beta C; tile sizes are far below 2^31.
void colmajor(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  const int LDA = static_cast<int>(lda), LDB = static_cast<int>(ldb), LDC = static_cast<int>(ldc);
  const float one = 1.0f;
  sgemm(&ta, &tb, &M, &N, &K, &one, a, &LDA, b, &LDB, &beta, c, &LDC);
}

// C = A B^T  <=>  C^T = B A^T (column-major).
void gemm_abt(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* c, int64_t ldc) {
  colmajor('T', 'N', N, M, K, b, ldb, a, lda, 0.0f, c, ldc);
}

// C += A B  <=>  C^T += B^T A^T.
void gemm_ab_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  colmajor('N', 'N', N, M, K, b, ldb, a, lda, 1.0f, c, ldc);
}

// C += A^T B  <=>  C^T += B^T A.
void gemm_atb_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float* c, int64_t ldc) {
  colmajor('N', 'T', N, M, K, b, ldb, a, lda, 1.0f, c, ldc);
}

}  // namespace

// Measured on one core of our AMD EPYC (a 64 x 128 score tile at D=64): our 6x16 AVX2 kernel 64 GFLOP/s,
// MKL sgemm 98 GFLOP/s, so tiles of 16 rows or more use BLAS, with our AVX2 softmax passes.
// Below that (decode: a handful of rows per tile) the tile is bound by reading K and V and our
// kernel avoids the per-call overhead of sgemm.
const AttentionKernels& kernels(int64_t rows) {
  static const AttentionKernels blas_avx2 = {gemm_abt,
                                             gemm_ab_acc,
                                             gemm_atb_acc,
                                             kAttentionAvx2.row_max,
                                             kAttentionAvx2.exp_row,
                                             kAttentionAvx2.ds_row};
  if (!use_avx2()) return kAttentionPortable;
  return rows >= 16 && sgemm != nullptr ? blas_avx2 : kAttentionAvx2;
}

}  // namespace gptcore::attn
