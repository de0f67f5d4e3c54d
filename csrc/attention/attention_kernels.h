// Attention tile micro-kernels on plain fp32 pointers, shared by the portable and SIMD builds:
// the row layout's two GEMMs (the forward's pieces below one column-layout vector: decode), the
// row passes of the online softmax and the backward's dS, and the column-layout forward kernels.
// No ATen here: csrc/attention_*_avx2.cpp and *_avx512.cpp include this header.
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
  // max of x[0..n) (-inf when n == 0).
  float (*row_max)(const float* x, int64_t n);
  // x[j] = exp(x[j] - shift) in place, shift finite; returns the sum. exp(-inf) gives 0.
  float (*exp_row)(float* x, int64_t n, float shift);
  // ds[j] = p[j] * (dp[j] - delta), in place in dp.
  void (*ds_row)(const float* p, float* dp, int64_t n, float delta);
};

extern const AttentionKernels kAttentionPortable;
extern const AttentionKernels kAttentionAvx2;
extern const AttentionKernels kAttentionAvx512;

// The column-layout forward (csrc/attention_cols_cpu.cpp) of one ISA level: scores transposed,
// S^T (keys x Mp query rows, Mp % lanes == 0, row stride Mp), in base 2. kColsAvx512 needs
// AVX-512 (attention_cols_avx512.cpp, 16 lanes), kColsAvx2 AVX2 + FMA (attention_cols_avx2.cpp,
// 8 lanes). rows[2c], rows[2c + 1]: the key rows [lo, hi) that the columns
// [chunk c, chunk (c + 1)) may see; the other rows of those columns are never read (the
// masked-off corners of diagonal tiles).
struct ColsKernels {
  int64_t lanes;  // query rows per vector: Mp is a multiple of it, and pieces have at least as many
  int64_t chunk;  // columns per rows[] pair: the width of one register tile
  // S^T = K (rows x D, row stride ldk) Q^T (D x Mp); colmax (Mp) = column maxima.
  void (*scores)(const int64_t* rows, int64_t Mp, int64_t D, const float* k, int64_t ldk,
                 const float* qt, float* st, float* colmax);
  // Online softmax over the rows of each column: m = max(m, column max), alpha = 2^(m_old - m),
  // S^T = 2^(S^T - m) in place, l = alpha l + column sum. A column with m = -inf gets 0s.
  // colmax: the column maxima of S^T as it is now, or nullptr to compute them here (after a
  // mask or softcap changed S^T).
  void (*softmax)(float* st, const int64_t* rows, int64_t Mp, const float* colmax, float* m,
                  float* l, float* alpha);
  // O^T (D x Mp) = alpha (per column) * O^T + V^T P^T, V (keys x D, row stride ldv), P^T in st.
  void (*values)(int64_t D, int64_t Mp, const int64_t* rows, const float* v, int64_t ldv,
                 const float* pt, const float* alpha, float* ot);
};

extern const ColsKernels kColsAvx2;
extern const ColsKernels kColsAvx512;

}  // namespace gptcore
