// AVX2 + FMA kernels of the column-layout attention forward (csrc/attention_cols_cpu.cpp), the
// 8-lane twin of attention_cols_avx512.cpp: scores kept transposed, S^T (keys x query rows), so
// every softmax step is vertical over 8 query rows at once and both GEMMs read K and V in place
// as broadcast operands (no packing):
//   S^T (nk x Mp) = K (nk x D) Q^T (D x Mp)        register tiles of 4 keys x 24 rows (8 keys
//                                                   for a last 8 rows), column maxima in the
//                                                   epilogue
//   P^T = exp2(S^T - m), m, l updated per column    one vertical pass over S^T
//   O^T (D x Mp) = alpha O^T + V^T P^T              4 head-dim values x 24 rows (8 x 8), rescale
//                                                   fused
// Mp is a multiple of 8; scores are in base 2 (Q was scaled by log2(e)).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "attention_kernels.h"
#include "simd_avx2.h"

namespace gptcore {
namespace {

// 4 rows x 3 vectors: 12 accumulators + 3 B vectors + 1 broadcast = the 16 ymm registers. 4
// divides the common head dims and the 128-key tile, so no tail tiles run there; 3 vectors (24
// columns) is also the unit of rows[] (kColsChunk).
constexpr int kTileRows = 4;
constexpr int kTileVecs = 3;
constexpr int64_t kLanes = 8;
constexpr int64_t kColsChunk = kTileVecs * kLanes;

// R rows of C (x 8 V columns) = sum over k < K of A[r][k] (broadcast) * B[k][:].
// Scores: C starts at zero and the column maxima of the tile are merged into colmax.
// Values: C starts from itself scaled per column by scale (8 V values).
enum class Mode { kScores, kValues };

// One flat array of accumulators with every loop over it unrolled, as in the AVX-512 file:
// objdump shows the k loop with no ymm access to the stack.
template <int R, int V, Mode mode>
inline void broadcast_tile(int64_t K, const float* a, int64_t lda, int64_t a_step,
                           const float* b, int64_t ldb, float* c, int64_t ldc, float* colmax,
                           const float* scale) {
  __m256 acc[R * V];
#pragma GCC unroll 12
  for (int i = 0; i < R * V; ++i) {
    const int r = i / V, v = i % V;
    acc[i] = mode == Mode::kValues
                 ? _mm256_mul_ps(_mm256_loadu_ps(c + r * ldc + 8 * v), _mm256_loadu_ps(scale + 8 * v))
                 : _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    __m256 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(b + k * ldb + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * lda + k * a_step);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) acc[r * V + v] = _mm256_fmadd_ps(ar, bv[v], acc[r * V + v]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < R * V; ++i) _mm256_storeu_ps(c + (i / V) * ldc + 8 * (i % V), acc[i]);
  if constexpr (mode == Mode::kScores) {
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      __m256 mx = _mm256_loadu_ps(colmax + 8 * v);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) mx = _mm256_max_ps(mx, acc[r * V + v]);
      _mm256_storeu_ps(colmax + 8 * v, mx);
    }
  }
}

// The tile for any R <= 4 rows and V = 2 or 3 vectors (the tails of the 4 x 3 blocking).
template <int R, Mode mode>
inline void tile_cols(int V, int64_t K, const float* a, int64_t lda, int64_t a_step,
                      const float* b, int64_t ldb, float* c, int64_t ldc, float* colmax,
                      const float* scale) {
  if (V == 3) return broadcast_tile<R, 3, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale);
  broadcast_tile<R, 2, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale);
}

// One vector (the last 8 columns when Mp % 24 == 8, as at 128 rows) takes 8 rows per tile: with
// 4 it had 4 accumulators, too few to cover the FMA latency, and ran at half speed.
constexpr int kOneVectorRows = 8;

template <Mode mode>
void tile_one_vector(int R, int64_t K, const float* a, int64_t lda, int64_t a_step,
                     const float* b, int64_t ldb, float* c, int64_t ldc, float* colmax,
                     const float* scale) {
  switch (R) {
    case 8: broadcast_tile<8, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 7: broadcast_tile<7, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 6: broadcast_tile<6, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 5: broadcast_tile<5, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 4: broadcast_tile<4, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 3: broadcast_tile<3, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 2: broadcast_tile<2, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    default: broadcast_tile<1, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
  }
}

// Rows per tile for V vectors.
inline int tile_rows(int V) { return V == 1 ? kOneVectorRows : kTileRows; }

// The full 4 x 3 tile is called directly, as the 4 x 4 one in the AVX-512 file.
template <Mode mode>
void tile(int R, int V, int64_t K, const float* a, int64_t lda, int64_t a_step, const float* b,
          int64_t ldb, float* c, int64_t ldc, float* colmax, const float* scale) {
  if (R == kTileRows && V == kTileVecs)
    return broadcast_tile<kTileRows, kTileVecs, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax,
                                                      scale);
  if (V == 1) return tile_one_vector<mode>(R, K, a, lda, a_step, b, ldb, c, ldc, colmax, scale);
  switch (R) {
    case 4: tile_cols<4, mode>(V, K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 3: tile_cols<3, mode>(V, K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 2: tile_cols<2, mode>(V, K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    default: tile_cols<1, mode>(V, K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
  }
}

void cols_scores(const int64_t* rows, int64_t Mp, int64_t D, const float* k, int64_t ldk,
                 const float* qt, float* st, float* colmax) {
  std::fill(colmax, colmax + Mp, -INFINITY);
  for (int64_t c = 0; c < Mp; c += kColsChunk) {
    const int V = static_cast<int>(std::min(kColsChunk, Mp - c) / kLanes);
    const int64_t hi = rows[c / kColsChunk * 2 + 1], step = tile_rows(V);
    for (int64_t j = rows[c / kColsChunk * 2]; j < hi; j += step) {
      const int R = static_cast<int>(std::min(step, hi - j));
      tile<Mode::kScores>(R, V, D, k + j * ldk, ldk, 1, qt + c, Mp, st + j * Mp + c, Mp,
                          colmax + c, nullptr);
    }
  }
}

void cols_softmax(float* st, const int64_t* rows, int64_t Mp, const float* colmax, float* m,
                  float* l, float* alpha) {
  for (int64_t c = 0; c < Mp; c += kLanes) {
    const int64_t lo = rows[c / kColsChunk * 2], hi = rows[c / kColsChunk * 2 + 1];
    __m256 mx = _mm256_loadu_ps(m + c);
    if (colmax) {
      mx = _mm256_max_ps(mx, _mm256_loadu_ps(colmax + c));
    } else {
      for (int64_t j = lo; j < hi; ++j) mx = _mm256_max_ps(mx, _mm256_loadu_ps(st + j * Mp + c));
    }
    // A column that has seen only -inf keeps m = -inf; it subtracts 0 so that exp2 gives 0
    // instead of exp2(-inf - -inf) = NaN.
    const __m256 shift =
        _mm256_and_ps(mx, _mm256_cmp_ps(mx, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
    const __m256 a = exp2_256(_mm256_sub_ps(_mm256_loadu_ps(m + c), shift));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = lo; j < hi; ++j) {
      const __m256 p = exp2_256(_mm256_sub_ps(_mm256_loadu_ps(st + j * Mp + c), shift));
      _mm256_storeu_ps(st + j * Mp + c, p);
      sum = _mm256_add_ps(sum, p);
    }
    _mm256_storeu_ps(m + c, mx);
    _mm256_storeu_ps(alpha + c, a);
    _mm256_storeu_ps(l + c, _mm256_fmadd_ps(_mm256_loadu_ps(l + c), a, sum));
  }
}

void cols_values(int64_t D, int64_t Mp, const int64_t* rows, const float* v, int64_t ldv,
                 const float* pt, const float* alpha, float* ot) {
  for (int64_t c = 0; c < Mp; c += kColsChunk) {
    const int V = static_cast<int>(std::min(kColsChunk, Mp - c) / kLanes);
    const int64_t lo = rows[c / kColsChunk * 2], n = rows[c / kColsChunk * 2 + 1] - lo;
    const int64_t step = tile_rows(V);
    for (int64_t d = 0; d < D; d += step) {  // A[d][j] = v[j * ldv + d]
      const int R = static_cast<int>(std::min(step, D - d));
      tile<Mode::kValues>(R, V, n, v + lo * ldv + d, 1, ldv, pt + lo * Mp + c, Mp,
                          ot + d * Mp + c, Mp, nullptr, alpha + c);
    }
  }
}

}  // namespace

const ColsKernels kColsAvx2 = {kLanes, kColsChunk, cols_scores, cols_softmax, cols_values};

}  // namespace gptcore
