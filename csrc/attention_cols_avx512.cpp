// AVX-512 kernels of the column-layout attention forward (csrc/attention_cols_cpu.cpp): scores
// are kept transposed, S^T (keys x query rows), so that every softmax step is a vertical
// operation on 16 query rows at once (no horizontal max/sum, no scalar exp for the rescale
// factor) and both GEMMs read K and V in place as broadcast operands (no packing):
//   S^T (nk x Mp) = K (nk x D) Q^T (D x Mp)        register tiles of 6 keys x 64 rows
//   P^T = exp2(S^T - m), m, l updated per column    two vertical passes over S^T
//   O^T (D x Mp) = alpha O^T + V^T P^T              6 head-dim values x 64 rows, rescale fused
// Mp is a multiple of 16; scores are in base 2 (Q was scaled by log2(e)).
#include <immintrin.h>

#include <cmath>

#include "attention_kernels.h"

namespace gptcore {
namespace {

constexpr int kTileRows = 6;  // 6 x 4 accumulators + 4 B vectors + 1 broadcast <= 32 zmm

// 2^x: n = round(x), 2^(x - n) by its degree-6 Taylor polynomial in ln2 (|x - n| <= 1/2,
// within 2 ulp), then vscalefps multiplies by 2^n. Inputs below -126 (-inf included) give 0.
inline __m512 exp2_512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-126.0f);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(128.0f));
  const __m512 n = _mm512_roundscale_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(xc, n);
  __m512 p = _mm512_set1_ps(1.5403530393e-4f);  // ln2^6 / 720
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291076e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504108665e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650696e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718056e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), p, n);
}

// R rows of C (x 16 V columns) = sum over k < K of A[r][k] (broadcast) * B[k][:]; with Acc
// the tile starts from C scaled per column by `scale` (16 V values), else from zero.
template <int R, int V, bool Acc>
inline void broadcast_tile(int64_t K, const float* a, int64_t lda, int64_t a_step,
                           const float* b, int64_t ldb, float* c, int64_t ldc,
                           const float* scale) {
  __m512 acc[R][V];
  for (int v = 0; v < V; ++v) {
    const __m512 s = Acc ? _mm512_loadu_ps(scale + 16 * v) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r)
      acc[r][v] = Acc ? _mm512_mul_ps(_mm512_loadu_ps(c + r * ldc + 16 * v), s) : s;
  }
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * lda + k * a_step]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

// The tile for any R <= 6 rows and V <= 4 vectors (the tails of a 6 x 4 blocking).
template <int R, bool Acc>
inline void tile_cols(int V, int64_t K, const float* a, int64_t lda, int64_t a_step,
                      const float* b, int64_t ldb, float* c, int64_t ldc, const float* scale) {
  switch (V) {
    case 4: broadcast_tile<R, 4, Acc>(K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    case 3: broadcast_tile<R, 3, Acc>(K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    case 2: broadcast_tile<R, 2, Acc>(K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    default: broadcast_tile<R, 1, Acc>(K, a, lda, a_step, b, ldb, c, ldc, scale); break;
  }
}

template <bool Acc>
void tile(int R, int V, int64_t K, const float* a, int64_t lda, int64_t a_step, const float* b,
          int64_t ldb, float* c, int64_t ldc, const float* scale) {
  switch (R) {
    case 6: tile_cols<6, Acc>(V, K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    case 5: tile_cols<5, Acc>(V, K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    case 4: tile_cols<4, Acc>(V, K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    case 3: tile_cols<3, Acc>(V, K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    case 2: tile_cols<2, Acc>(V, K, a, lda, a_step, b, ldb, c, ldc, scale); break;
    default: tile_cols<1, Acc>(V, K, a, lda, a_step, b, ldb, c, ldc, scale); break;
  }
}

}  // namespace

void cols_scores_avx512(int64_t nk, int64_t Mp, int64_t D, const float* k, int64_t ldk,
                        const float* qt, float* st) {
  for (int64_t c = 0; c < Mp; c += 64) {
    const int V = static_cast<int>(std::min<int64_t>(64, Mp - c) / 16);
    for (int64_t j = 0; j < nk; j += kTileRows) {
      const int R = static_cast<int>(std::min<int64_t>(kTileRows, nk - j));
      tile<false>(R, V, D, k + j * ldk, ldk, 1, qt + c, Mp, st + j * Mp + c, Mp, nullptr);
    }
  }
}

void cols_softmax_avx512(float* st, int64_t nk, int64_t Mp, float* m, float* l, float* alpha) {
  for (int64_t c = 0; c < Mp; c += 16) {
    __m512 mx = _mm512_loadu_ps(m + c);
    for (int64_t j = 0; j < nk; ++j) mx = _mm512_max_ps(mx, _mm512_loadu_ps(st + j * Mp + c));
    // A column that has seen only -inf keeps m = -inf; it subtracts 0 so that exp2 gives 0
    // instead of exp2(-inf - -inf) = NaN.
    const __m512 shift = _mm512_maskz_mov_ps(
        _mm512_cmp_ps_mask(mx, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ), mx);
    const __m512 a = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(m + c), shift));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
      const __m512 p = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(st + j * Mp + c), shift));
      _mm512_storeu_ps(st + j * Mp + c, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(m + c, mx);
    _mm512_storeu_ps(alpha + c, a);
    _mm512_storeu_ps(l + c, _mm512_fmadd_ps(_mm512_loadu_ps(l + c), a, sum));
  }
}

void cols_values_avx512(int64_t D, int64_t Mp, int64_t nk, const float* v, int64_t ldv,
                        const float* pt, const float* alpha, float* ot) {
  for (int64_t c = 0; c < Mp; c += 64) {
    const int V = static_cast<int>(std::min<int64_t>(64, Mp - c) / 16);
    for (int64_t d = 0; d < D; d += kTileRows) {  // A[d][j] = v[j * ldv + d]
      const int R = static_cast<int>(std::min<int64_t>(kTileRows, D - d));
      tile<true>(R, V, nk, v + d, 1, ldv, pt + c, Mp, ot + d * Mp + c, Mp, alpha + c);
    }
  }
}

}  // namespace gptcore
