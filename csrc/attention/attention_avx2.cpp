// AVX2 + FMA attention row kernels: the row layout's GEMMs for the forward's pieces below the
// column layout's vector (fewer than 8 rows at avx2, 7 to 15 at avx512: decode), as dot products
// up to 6 rows and register-blocked 6x16 tiles above (12 accumulators, as in BLIS's Haswell
// sgemm kernel), and vectorised softmax passes (exp256 from simd_avx2.h).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_kernels.h"
#include "simd_avx2.h"

namespace gptcore {
namespace {

constexpr int kRows = 6;  // 6 rows x 2 vectors = 12 accumulators + 2 B loads + 1 broadcast <= 16 ymm

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Asks for the cache lines of x[0..n) ahead of use.
inline void prefetch_row(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) _mm_prefetch(reinterpret_cast<const char*>(x + i), _MM_HINT_T0);
}

// R rows of C (x 16 columns) = A rows times one packed panel of B (K x 16).
template <int R>
inline void nt_tile(int64_t K, const float* a, int64_t lda, const float* bp, float* c,
                    int64_t ldc) {
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bp + 16 * k), b1 = _mm256_loadu_ps(bp + 16 * k + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * lda + k);
      acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(c + r * ldc, acc0[r]);
    _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
  }
}

// R rows x 16 columns of C += A rows times B (K x 16, row stride ldb).
template <int R>
inline void nn_tile(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                    int64_t ldc) {
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm256_loadu_ps(c + r * ldc);
    acc1[r] = _mm256_loadu_ps(c + r * ldc + 8);
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * lda + k);
      acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(c + r * ldc, acc0[r]);
    _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
  }
}

// Calls tile<R>(...) for the remainder rows R = 1..5 of a 6-row blocking.
template <template <int> class Tile, typename... Args>
inline void tail_rows(int64_t rows, Args... args) {
  switch (rows) {
    case 1: Tile<1>::run(args...); break;
    case 2: Tile<2>::run(args...); break;
    case 3: Tile<3>::run(args...); break;
    case 4: Tile<4>::run(args...); break;
    case 5: Tile<5>::run(args...); break;
    default: break;
  }
}

template <int R>
struct NtTile {
  static void run(int64_t K, const float* a, int64_t lda, const float* bp, float* c, int64_t ldc) {
    nt_tile<R>(K, a, lda, bp, c, ldc);
  }
};

template <int R>
struct NnTile {
  static void run(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                  int64_t ldc) {
    nn_tile<R>(K, a, lda, b, ldb, c, ldc);
  }
};

// R rows of A against every row of B by dot products along K: each B row is loaded once, so a
// decode tile (a few query rows, thousands of keys) streams K at memory speed with no packing.
template <int R>
void abt_dots(int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
              float* c, int64_t ldc) {
  const __m256i tail = tail_mask(K % 8);
  for (int64_t n = 0; n < N; ++n) {
    const float* brow = b + n * ldb;
    if (n + 4 < N) prefetch_row(brow + 4 * ldb, K);
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 bv = _mm256_loadu_ps(brow + k);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(a + r * lda + k), bv, acc[r]);
    }
    if (k < K) {
      const __m256 bv = _mm256_maskload_ps(brow + k, tail);
      for (int r = 0; r < R; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_maskload_ps(a + r * lda + k, tail), bv, acc[r]);
    }
    for (int r = 0; r < R; ++r) c[r * ldc + n] = hsum(acc[r]);
  }
}

template <int R>
struct DotTile {
  static void run(int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
                  float* c, int64_t ldc) {
    abt_dots<R>(N, K, a, lda, b, ldb, c, ldc);
  }
};

// Tiles of up to 6 rows use dot products (above); larger ones pack B (N x K) 16 rows at a time
// into a (K x 16) panel, which stays in L1 while every 6-row block of A streams past it;
// columns past N are computed on zero rows and dropped.
void gemm_abt(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* c, int64_t ldc) {
  if (M <= kRows) {
    if (M == kRows) abt_dots<kRows>(N, K, a, lda, b, ldb, c, ldc);
    else tail_rows<DotTile>(M, N, K, a, lda, b, ldb, c, ldc);
    return;
  }
  thread_local std::vector<float> panel, out;
  panel.resize(K * kPanel);
  out.resize(M * kPanel);
  for (int64_t n = 0; n < N; n += kPanel) {
    const int64_t cols = std::min(kPanel, N - n);
    for (int64_t j = 0; j < kPanel; ++j)
      for (int64_t k = 0; k < K; ++k) panel[k * kPanel + j] = j < cols ? b[(n + j) * ldb + k] : 0.0f;
    int64_t m = 0;
    for (; m + kRows <= M; m += kRows)
      nt_tile<kRows>(K, a + m * lda, lda, panel.data(), out.data() + m * kPanel, kPanel);
    tail_rows<NtTile>(M - m, K, a + m * lda, lda, panel.data(), out.data() + m * kPanel, kPanel);
    for (int64_t r = 0; r < M; ++r)
      std::copy(out.data() + r * kPanel, out.data() + r * kPanel + cols, c + r * ldc + n);
  }
}

// N must be a multiple of 16 (callers pass the padded head dim Dp).
void gemm_ab_acc(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  for (int64_t n = 0; n < N; n += kPanel) {
    int64_t m = 0;
    for (; m + kRows <= M; m += kRows)
      nn_tile<kRows>(K, a + m * lda, lda, b + n, ldb, c + m * ldc + n, ldc);
    tail_rows<NnTile>(M - m, K, a + m * lda, lda, b + n, ldb, c + m * ldc + n, ldc);
  }
}

// gemm_ab_acc for a few rows of A (decode), where B is read from DRAM once: walking B in
// 16-column passes over all K rows stalls on strided misses, so B is taken 16 rows (8 KB at
// D=128) at a time, prefetched, then reused from L1 by every pass
// (docs/cpu-isa.md, "Measurements behind the code").
void gemm_ab_acc_few_rows(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                          const float* b, int64_t ldb, float* c, int64_t ldc) {
  constexpr int64_t kChunk = 16;
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t kc = std::min(kChunk, K - k0);
    for (int64_t k = 0; k < kc; ++k) prefetch_row(b + (k0 + k) * ldb, N);
    gemm_ab_acc(M, N, kc, a + k0, lda, b + k0 * ldb, ldb, c, ldc);
  }
}

void gemm_ab(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc) {
  if (M <= kRows) gemm_ab_acc_few_rows(M, N, K, a, lda, b, ldb, c, ldc);
  else gemm_ab_acc(M, N, K, a, lda, b, ldb, c, ldc);
}

float row_max(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
  float best = hmax(m);
  for (; j < n; ++j) best = std::fmax(best, x[j]);
  return best;
}

float exp_row(float* x, int64_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
    _mm256_storeu_ps(x + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (j < n) {
    const __m256i mask = tail_mask(n - j);
    const __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(x + j, mask),
                                      _mm256_castsi256_ps(mask));
    const __m256 e = exp256(_mm256_sub_ps(v, s));
    _mm256_maskstore_ps(x + j, mask, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum(sum);
}

void ds_row(const float* p, float* dp, int64_t n, float delta) {
  const __m256 d = _mm256_set1_ps(delta);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_loadu_ps(p + j),
                                           _mm256_sub_ps(_mm256_loadu_ps(dp + j), d)));
  for (; j < n; ++j) dp[j] = p[j] * (dp[j] - delta);
}

}  // namespace

const AttentionKernels kAttentionAvx2 = {gemm_abt, gemm_ab, row_max, exp_row, ds_row};

}  // namespace gptcore
