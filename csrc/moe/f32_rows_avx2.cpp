// AVX2 fp32 register blocks for a few activation rows against weights read in place, the twin of
// f32_rows_avx512.cpp (see f32_rows.h; the loops over row blocks and the block sizes are
// register_blocks.h's). Each weight vector is loaded once per block of up to 4 activation rows
// (2 for K-major weights) and feeds every row of the block; K (row-major) or column (K-major)
// tails go through vmaskmovps.
//   row-major: C weight rows x R activation rows of dot products along K, 8 k a step,
//              R*C = 8 accumulators reduced once at the end
//   K-major:   8 or 4 vectors (64 or 32 output columns) x 1 or 2 rows, x[i][k] broadcast
//              against weight row k
#include <immintrin.h>

#include <algorithm>

#include "f32_rows.h"
#include "register_blocks.h"
#include "simd_avx2.h"

namespace gptcore {
namespace {

using register_blocks::kAhead;
using register_blocks::kWeightBlock;

// Row-major: activation rows per block. Every shape below keeps 8 accumulators: the fewest that
// keep two FMAs a cycle in flight at 4 cycles' latency, leaving room in 16 ymm for the loaded
// operands.
constexpr int kMaxRows = 4;

// Row-major: weight rows per register block for R activation rows (C divides kWeightBlock).
template <int R>
constexpr int nt_cols() { return R == 1 ? 8 : R == 2 ? 4 : 2; }

// One step of 8 k (the lanes of `mask` when kTail) for C weight rows and R activation rows;
// kPrefetch: fetch the same bytes of the next C rows (the next call), one line per row every
// other step.
template <int R, int C, bool kTail, bool kPrefetch>
inline void nt_step(__m256 (&acc)[R * C], __m256i mask, int64_t k, const float* x, int64_t ldx,
                    const float* w, int64_t ldw) {
  __m256 wv[C];
  #pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
    if (kPrefetch)
      _mm_prefetch(reinterpret_cast<const char*>(w + (c + C) * ldw + k), _MM_HINT_T0);
    wv[c] = kTail ? _mm256_maskload_ps(w + c * ldw + k, mask) : _mm256_loadu_ps(w + c * ldw + k);
  }
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    const float* xr = x + i * ldx + k;
    const __m256 xv = kTail ? _mm256_maskload_ps(xr, mask) : _mm256_loadu_ps(xr);
    #pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[i * C + c] = _mm256_fmadd_ps(xv, wv[c], acc[i * C + c]);
  }
}

// C weight rows [0, C) of w against R activation rows, all of K: 16 k an iteration (one
// prefetched line per weight row), then 8, then the masked tail.
template <int R, int C>
void nt_block(int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw, float* out,
              int64_t ldo) {
  const __m256i all = _mm256_set1_epi32(-1);
  __m256 acc[R * C];  // one dimension: GCC 12 kept 2-D arrays of vectors in memory
  #pragma GCC unroll 8
  for (int j = 0; j < R * C; ++j) acc[j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    nt_step<R, C, false, true>(acc, all, k, x, ldx, w, ldw);
    nt_step<R, C, false, false>(acc, all, k + 8, x, ldx, w, ldw);
  }
  if (k + 8 <= K) {
    nt_step<R, C, false, true>(acc, all, k, x, ldx, w, ldw);
    k += 8;
  }
  if (k < K) nt_step<R, C, true, false>(acc, tail_mask(K - k), k, x, ldx, w, ldw);
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 8
    for (int c = 0; c < C; ++c) out[i * ldo + c] = hsum(acc[i * C + c]);
}

// Weight rows [0, cw) (cw <= kWeightBlock) against R activation rows; rows past the last full
// C one at a time.
template <int R>
void nt_rows(int64_t cw, int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw,
             float* out, int64_t ldo) {
  constexpr int C = nt_cols<R>();
  int64_t c = 0;
  for (; c + C <= cw; c += C) nt_block<R, C>(K, x, ldx, w + c * ldw, ldw, out + c, ldo);
  for (; c < cw; ++c) nt_block<R, 1>(K, x, ldx, w + c * ldw, ldw, out + c, ldo);
}

// K-major: activation rows per block, and vectors of 8 output columns per register block for R
// rows. At most 2 rows: 3-4 rows leave room for 2 vectors only, 16-column strips that read each
// weight row in 64-byte pieces and lost to sgemm (moe_experts_cpu.cpp takes this kernel for
// at most 2 rows per expert).
constexpr int kMaxRowsKmajor = 2;
template <int R>
constexpr int nn_vectors() { return R == 1 ? 8 : 4; }

// R activation rows x V vectors of output columns [0, cols), all of K: the last vector masked
// unless kFull (cols = 8 V).
template <int R, bool kFull>
void nn_block(int64_t cols, int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw,
              float* out, int64_t ldo) {
  constexpr int V = nn_vectors<R>();
  const int vectors = kFull ? V : static_cast<int>((cols + 7) / 8);
  const __m256i last = kFull ? _mm256_set1_epi32(-1) : tail_mask(cols - 8 * (vectors - 1));
  __m256 acc[R * V];  // one dimension, as in nt_block
  #pragma GCC unroll 8
  for (int j = 0; j < R * V; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* row = w + k * ldw;
    if (k + kAhead < K) {
      #pragma GCC unroll 8
      for (int v = 0; v < V; v += 2)  // one 64-byte line per two vectors
        if (v < vectors)
          _mm_prefetch(reinterpret_cast<const char*>(row + kAhead * ldw + 8 * v), _MM_HINT_T0);
    }
    #pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      if (v >= vectors) break;
      const __m256 wv = kFull || v + 1 < vectors ? _mm256_loadu_ps(row + 8 * v)
                                                 : _mm256_maskload_ps(row + 8 * v, last);
      #pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        acc[i * V + v] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + i * ldx + k), wv, acc[i * V + v]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      if (v >= vectors) break;
      float* o = out + i * ldo + 8 * v;
      if (kFull || v + 1 < vectors) {
        _mm256_storeu_ps(o, acc[i * V + v]);
      } else {
        _mm256_maskstore_ps(o, last, acc[i * V + v]);
      }
    }
}

template <int R>
void nn_rows(int64_t m, int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw,
             float* out, int64_t ldo) {
  constexpr int64_t width = 8 * nn_vectors<R>();
  int64_t c = 0;
  for (; c + width <= m; c += width) nn_block<R, true>(width, K, x, ldx, w + c, ldw, out + c, ldo);
  if (c < m) nn_block<R, false>(m - c, K, x, ldx, w + c, ldw, out + c, ldo);
}

template <int R>
struct Nt {
  static void run(const float* x, float* out, int64_t m, int64_t K, int64_t ldx, const float* w,
                  int64_t ldw, int64_t ldo) {
    nt_rows<R>(m, K, x, ldx, w, ldw, out, ldo);
  }
};

template <int R>
struct Nn {
  static void run(const float* x, float* out, int64_t m, int64_t K, int64_t ldx, const float* w,
                  int64_t ldw, int64_t ldo) {
    nn_rows<R>(m, K, x, ldx, w, ldw, out, ldo);
  }
};

}  // namespace

void f32_rows_nt_avx2(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                      const float* w, int64_t ldw, float* out, int64_t ldo) {
  for (int64_t c = 0; c < m; c += kWeightBlock) {
    const int64_t cw = std::min(kWeightBlock, m - c);
    register_blocks::over_rows<Nt, kMaxRows>(nx, x, ldx, out + c, ldo, cw, K, ldx, w + c * ldw,
                                             ldw, ldo);
  }
}

void f32_rows_nn_avx2(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                      const float* w, int64_t ldw, float* out, int64_t ldo) {
  register_blocks::over_rows<Nn, kMaxRowsKmajor>(nx, x, ldx, out, ldo, m, K, ldx, w, ldw, ldo);
}

}  // namespace gptcore
