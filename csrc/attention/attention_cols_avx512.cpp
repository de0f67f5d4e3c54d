// AVX-512 kernels of the column-layout attention forward (csrc/attention_cols_cpu.cpp): scores
// are kept transposed, S^T (keys x query rows), so that every softmax step is a vertical
// operation on 16 query rows at once (no horizontal max/sum, no scalar exp for the rescale
// factor) and both GEMMs read K and V in place as broadcast operands (no packing):
//   S^T (nk x Mp) = K (nk x D) Q^T (D x Mp)        register tiles of 4 keys x 64 rows,
//                                                   column maxima in the epilogue
//   P^T = exp2(S^T - m), m, l updated per column    one vertical pass over S^T
//   O^T (D x Mp) = alpha O^T + V^T P^T              4 head-dim values x 64 rows, rescale fused
// Mp is a multiple of 16; scores are in base 2 (Q was scaled by log2(e)).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "attention_kernels.h"

namespace gptcore {
namespace {

// 4 rows x 4 vectors: 16 accumulators. Every shape from 4x2 to 8x3 ran at the same speed; 4
// divides the common head dims and tile sizes, so no slower tail tiles run there
// (docs/cpu-isa.md, "Measurements behind the code").
constexpr int kTileRows = 4;

// 2^x for x <= 0: n = round(x), 2^(x - n) by its degree-6 Taylor polynomial in ln2 (|x - n| <=
// 1/2, within 2 ulp), then vscalefps multiplies by 2^n. Inputs below -126 (-inf included)
// give 0 through the zeroing mask, which also drops the NaN that -inf makes of x - n.
inline __m512 exp2_512(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.5403530393e-4f);  // ln2^6 / 720
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291076e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504108665e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650696e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718056e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ), p, n);
}

// R rows of C (x 16 V columns) = sum over k < K of A[r][k] (broadcast) * B[k][:].
// Scores: C starts at zero and the column maxima of the tile are merged into colmax.
// Values: C starts from itself scaled per column by scale (16 V values).
enum class Mode { kScores, kValues };

// The accumulators are one flat array and every loop over them is unrolled: with acc[R][V],
// GCC 12 kept the loop in registers but zeroed 1 KB of stack per call and stored the tile
// through it (objdump), a third of a call at D = 32.
template <int R, int V, Mode mode>
inline void broadcast_tile(int64_t K, const float* a, int64_t lda, int64_t a_step,
                           const float* b, int64_t ldb, float* c, int64_t ldc, float* colmax,
                           const float* scale) {
  __m512 acc[R * V];
#pragma GCC unroll 16
  for (int i = 0; i < R * V; ++i) {
    const int r = i / V, v = i % V;
    acc[i] = mode == Mode::kValues
                 ? _mm512_mul_ps(_mm512_loadu_ps(c + r * ldc + 16 * v), _mm512_loadu_ps(scale + 16 * v))
                 : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * lda + k * a_step]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r * V + v] = _mm512_fmadd_ps(ar, bv[v], acc[r * V + v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R * V; ++i) _mm512_storeu_ps(c + (i / V) * ldc + 16 * (i % V), acc[i]);
  if constexpr (mode == Mode::kScores) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      __m512 mx = _mm512_loadu_ps(colmax + 16 * v);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) mx = _mm512_max_ps(mx, acc[r * V + v]);
      _mm512_storeu_ps(colmax + 16 * v, mx);
    }
  }
}

// The tile for any R <= 4 rows and V <= 4 vectors (the tails of the 4 x 4 blocking).
template <int R, Mode mode>
inline void tile_cols(int V, int64_t K, const float* a, int64_t lda, int64_t a_step,
                      const float* b, int64_t ldb, float* c, int64_t ldc, float* colmax,
                      const float* scale) {
  switch (V) {
    case 4: broadcast_tile<R, 4, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 3: broadcast_tile<R, 3, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    case 2: broadcast_tile<R, 2, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
    default: broadcast_tile<R, 1, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale); break;
  }
}

// The full 4 x 4 tile is called directly: reached through the switch below it ran slower
// (docs/cpu-isa.md, "Measurements behind the code").
template <Mode mode>
void tile(int R, int V, int64_t K, const float* a, int64_t lda, int64_t a_step, const float* b,
          int64_t ldb, float* c, int64_t ldc, float* colmax, const float* scale) {
  if (R == 4 && V == 4)
    return broadcast_tile<4, 4, mode>(K, a, lda, a_step, b, ldb, c, ldc, colmax, scale);
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
  for (int64_t c = 0; c < Mp; c += 64) {
    const int V = static_cast<int>(std::min<int64_t>(64, Mp - c) / 16);
    const int64_t hi = rows[c / 32 + 1];
    for (int64_t j = rows[c / 32]; j < hi; j += kTileRows) {
      const int R = static_cast<int>(std::min<int64_t>(kTileRows, hi - j));
      tile<Mode::kScores>(R, V, D, k + j * ldk, ldk, 1, qt + c, Mp, st + j * Mp + c, Mp,
                          colmax + c, nullptr);
    }
  }
}

void cols_softmax(float* st, const int64_t* rows, int64_t Mp, const float* colmax, float* m,
                  float* l, float* alpha) {
  for (int64_t c = 0; c < Mp; c += 16) {
    const int64_t lo = rows[c / 64 * 2], hi = rows[c / 64 * 2 + 1];
    __m512 mx = _mm512_loadu_ps(m + c);
    if (colmax) {
      mx = _mm512_max_ps(mx, _mm512_loadu_ps(colmax + c));
    } else {
      for (int64_t j = lo; j < hi; ++j) mx = _mm512_max_ps(mx, _mm512_loadu_ps(st + j * Mp + c));
    }
    // A column that has seen only -inf keeps m = -inf; it subtracts 0 so that exp2 gives 0
    // instead of exp2(-inf - -inf) = NaN.
    const __m512 shift = _mm512_maskz_mov_ps(
        _mm512_cmp_ps_mask(mx, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ), mx);
    const __m512 a = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(m + c), shift));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = lo; j < hi; ++j) {
      const __m512 p = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(st + j * Mp + c), shift));
      _mm512_storeu_ps(st + j * Mp + c, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(m + c, mx);
    _mm512_storeu_ps(alpha + c, a);
    _mm512_storeu_ps(l + c, _mm512_fmadd_ps(_mm512_loadu_ps(l + c), a, sum));
  }
}

void cols_values(int64_t D, int64_t Mp, const int64_t* rows, const float* v, int64_t ldv,
                 const float* pt, const float* alpha, float* ot) {
  for (int64_t c = 0; c < Mp; c += 64) {
    const int V = static_cast<int>(std::min<int64_t>(64, Mp - c) / 16);
    const int64_t lo = rows[c / 32], n = rows[c / 32 + 1] - lo;
    for (int64_t d = 0; d < D; d += kTileRows) {  // A[d][j] = v[j * ldv + d]
      const int R = static_cast<int>(std::min<int64_t>(kTileRows, D - d));
      tile<Mode::kValues>(R, V, n, v + lo * ldv + d, 1, ldv, pt + lo * Mp + c, Mp,
                          ot + d * Mp + c, Mp, nullptr, alpha + c);
    }
  }
}

}  // namespace

// 16 lanes; rows[] per 64 columns, the width of the 4 x 4 tile.
const ColsKernels kColsAvx512 = {16, 64, cols_scores, cols_softmax, cols_values};

}  // namespace gptcore
