// fp32 GEMM through the BLAS sgemm that torch links (MKL in torch's x86-64 wheels): called
// directly, it costs no tensor wrappers or dispatch (several us per at::mm call), which matters
// for the many small per-tile and per-expert products. Inside a parallel region MKL runs on
// the calling thread only.
#pragma once
#include <cstdint>

namespace gptcore {

// False where torch was built without a Fortran-ABI sgemm; callers then use their own kernels.
bool blas_available();

// Column-major C (m x n) = op(A) op(B) + beta C, op = transpose when ta / tb is 'T'.
void blas_sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace gptcore
