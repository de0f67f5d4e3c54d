// AVX-512 fp32 register blocks for a few activation rows against weights read in place (see
// f32_rows.h; the loops over row blocks and the block sizes are register_blocks.h's). Each
// weight vector is loaded once per block of up to 6 activation rows and feeds every row of the
// block; K (row-major) or column (K-major) tails go through lane masks.
//   row-major: C weight rows x R activation rows of dot products along K, 16 k a step,
//              R*C accumulators reduced once at the end
//   K-major:   16-4 vectors (256-64 output columns) x R rows, x[i][k] broadcast against
//              weight row k
#include <immintrin.h>

#include <algorithm>

#include "f32_rows.h"
#include "register_blocks.h"
#include "simd_avx512.h"

namespace gptcore {
namespace {

using register_blocks::kAhead;
using register_blocks::kWeightBlock;

constexpr int kMaxRows = 6;  // activation rows per block: 6 x 4 = 24 accumulators

// One step of 16 k (lanes m) for C weight rows and R activation rows.
template <int R, int C>
inline void nt_step(__m512 (&acc)[R * C], __mmask16 m, int64_t k, const float* x, int64_t ldx,
                    const float* w, int64_t ldw) {
  __m512 wv[C];
  #pragma GCC unroll 32
  for (int c = 0; c < C; ++c) {
    // the same bytes of the next block of C rows (the next call), one line per row
    _mm_prefetch(reinterpret_cast<const char*>(w + (c + C) * ldw + k), _MM_HINT_T0);
    wv[c] = _mm512_maskz_loadu_ps(m, w + c * ldw + k);
  }
  #pragma GCC unroll 32
  for (int i = 0; i < R; ++i) {
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
    #pragma GCC unroll 32
    for (int c = 0; c < C; ++c) acc[i * C + c] = _mm512_fmadd_ps(xv, wv[c], acc[i * C + c]);
  }
}

// C weight rows [0, C) of w against R activation rows, all of K. The K tail is a separate
// masked step: with the mask chosen inside the loop GCC kept the accumulators in memory,
// storing all R x C of them every step.
template <int R, int C>
void nt_block(int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw, float* out,
              int64_t ldo) {
  __m512 acc[R * C];  // one dimension: GCC kept a 2-D array in memory (a store per FMA)
  #pragma GCC unroll 32
  for (int j = 0; j < R * C; ++j) acc[j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) nt_step<R, C>(acc, __mmask16(0xffff), k, x, ldx, w, ldw);
  if (k < K) nt_step<R, C>(acc, first_lanes(K - k), k, x, ldx, w, ldw);
  #pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 32
    for (int c = 0; c < C; ++c) out[i * ldo + c] = _mm512_reduce_add_ps(acc[i * C + c]);
}

// Weight rows [0, cw) (cw <= kWeightBlock) against R activation rows: C = 8 with 1-2 rows, so
// that 8 independent FMA chains hide the FMA latency, else 4; rows past the last full C one at
// a time.
template <int R>
void nt_rows(int64_t cw, int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw,
             float* out, int64_t ldo) {
  constexpr int C = R <= 2 ? 8 : 4;
  int64_t c = 0;
  for (; c + C <= cw; c += C) nt_block<R, C>(K, x, ldx, w + c * ldw, ldw, out + c, ldo);
  for (; c < cw; ++c) nt_block<R, 1>(K, x, ldx, w + c * ldw, ldw, out + c, ldo);
}

// R activation rows x up to 16 V output columns [0, cols) of K-major weights, all of K. V is
// 16 for one row: a K-major panel (256 columns wide, see moe_experts_cpu.cpp) is then read
// whole row by row, as the prefetcher likes it, instead of in 64-byte pieces of strided rows
// (64-column panels ran slower than MKL: docs/cpu-isa.md, "Measurements behind the code").
template <int R>
constexpr int nn_vectors() { return R == 1 ? 16 : R == 2 ? 8 : 4; }

template <int R>
void nn_block(int64_t cols, int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw,
              float* out, int64_t ldo) {
  constexpr int V = nn_vectors<R>();
  __mmask16 m[V];
  #pragma GCC unroll 32
  for (int v = 0; v < V; ++v) {
    const int64_t left = cols - 16 * v;
    m[v] = left >= 16 ? __mmask16(0xffff) : left > 0 ? first_lanes(left) : __mmask16(0);
  }
  __m512 acc[R * V];  // one dimension, as in nt_block
  #pragma GCC unroll 32
  for (int j = 0; j < R * V; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* row = w + k * ldw;
    if (k + kAhead < K) {
      #pragma GCC unroll 32
      for (int v = 0; v < V; ++v)
        if (m[v]) {
          _mm_prefetch(reinterpret_cast<const char*>(row + kAhead * ldw + 16 * v), _MM_HINT_T0);
        }
    }
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) {
      const __m512 wv = _mm512_maskz_loadu_ps(m[v], row + 16 * v);
      #pragma GCC unroll 32
      for (int i = 0; i < R; ++i)
        acc[i * V + v] = _mm512_fmadd_ps(_mm512_set1_ps(x[i * ldx + k]), wv, acc[i * V + v]);
    }
  }
  #pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(out + i * ldo + 16 * v, m[v], acc[i * V + v]);
}

template <int R>
void nn_rows(int64_t m, int64_t K, const float* x, int64_t ldx, const float* w, int64_t ldw,
             float* out, int64_t ldo) {
  constexpr int64_t width = 16 * nn_vectors<R>();
  for (int64_t c = 0; c < m; c += width)
    nn_block<R>(std::min<int64_t>(width, m - c), K, x, ldx, w + c, ldw, out + c, ldo);
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

void f32_rows_nt_avx512(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                        const float* w, int64_t ldw, float* out, int64_t ldo) {
  for (int64_t c = 0; c < m; c += kWeightBlock) {
    const int64_t cw = std::min(kWeightBlock, m - c);
    register_blocks::over_rows<Nt, kMaxRows>(nx, x, ldx, out + c, ldo, cw, K, ldx, w + c * ldw,
                                             ldw, ldo);
  }
}

void f32_rows_nn_avx512(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                        const float* w, int64_t ldw, float* out, int64_t ldo) {
  register_blocks::over_rows<Nn, kMaxRows>(nx, x, ldx, out, ldo, m, K, ldx, w, ldw, ldo);
}

}  // namespace gptcore
