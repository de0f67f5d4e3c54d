// The attention tile GEMMs through the BLAS sgemm that torch links (csrc/blas.h), called per
// tile from inside the parallel region (MKL then runs single-threaded). Row-major operands map
// onto column-major sgemm by computing the transposed product. Without BLAS our own AVX2 /
// AVX-512 micro-kernels run; off x86 (and at the portable level) the portable loops.
#include "attention_common.h"
#include "blas.h"

namespace gptcore::attn {
#if GPTCORE_X86  // elsewhere only the portable loops run
namespace {

// C = A B^T  <=>  C^T = B A^T (column-major).
void gemm_abt(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* c, int64_t ldc) {
  blas_sgemm('T', 'N', N, M, K, b, ldb, a, lda, 0.0f, c, ldc);
}

// C += A B  <=>  C^T += B^T A^T.
void gemm_ab_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  blas_sgemm('N', 'N', N, M, K, b, ldb, a, lda, 1.0f, c, ldc);
}

// C += A^T B  <=>  C^T += B^T A.
void gemm_atb_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float* c, int64_t ldc) {
  blas_sgemm('N', 'T', N, M, K, b, ldb, a, lda, 1.0f, c, ldc);
}

}  // namespace
#endif

// Tiles of 16 rows or more use BLAS, with our SIMD softmax passes: MKL's packed sgemm beats our
// 6x16 AVX2 kernel on a 64 x 128 score tile (docs/cpu-isa.md, "Measurements behind the code").
// Below that (decode: a handful of rows per tile) the tile is bound by reading K and V and our
// kernel avoids the per-call overhead of sgemm.
const AttentionKernels& kernels(int64_t rows) {
#if GPTCORE_X86
  static const AttentionKernels blas_avx2 = {gemm_abt,
                                             gemm_ab_acc,
                                             gemm_atb_acc,
                                             kAttentionAvx2.row_max,
                                             kAttentionAvx2.exp_row,
                                             kAttentionAvx2.ds_row};
  static const AttentionKernels blas_avx512 = {gemm_abt,
                                               gemm_ab_acc,
                                               gemm_atb_acc,
                                               kAttentionAvx512.row_max,
                                               kAttentionAvx512.exp_row,
                                               kAttentionAvx512.ds_row};
  const bool blas = rows >= 16 && blas_available();
  if (use_avx512()) return blas ? blas_avx512 : kAttentionAvx512;
  if (use_avx2()) return blas ? blas_avx2 : kAttentionAvx2;
#endif
  return kAttentionPortable;
}

}  // namespace gptcore::attn
