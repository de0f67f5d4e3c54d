// K-major bf16 weights times bf16 rows (see bf16_kmajor.h): register blocks of up to 8 strips
// of 32 output columns x 1-4 activation rows, 16 fp32 accumulators. Per pair of k: one 64-byte
// load of each weight row per strip, two permutes that interleave them into (w[k][c], w[k+1][c])
// pairs, and one vdpbf16ps per accumulator against the broadcast (x[k], x[k+1]) pair.
#include <immintrin.h>

#include <algorithm>

#include "bf16_kmajor.h"

namespace gptcore {
namespace {

// (x[k], x[k+1]) as one 32-bit lane in every lane; x[k+1] read as 0 past K.
inline __m512bh pair_of(const uint16_t* x, int64_t k, int64_t K) {
  uint32_t bits = x[k];
  if (k + 1 < K) bits |= static_cast<uint32_t>(x[k + 1]) << 16;
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(bits)));
}

// NX activation rows x S strips of 32 columns, over P segments of K at once: per pair of k,
// S contiguous 64-byte loads of each of the two weight rows, so a row of the (strided) K-major
// storage is read S lines at a time, and P pairs of rows are in flight. Several strips per pass
// beat one, and for one row 4 strips x 2 segments beat 8 x 1 and 2 x 4
// (docs/cpu-isa.md, "Measurements behind the code").
template <int NX, int S, int P>
void block(const uint16_t* w, int64_t ldw, int64_t cols, const uint16_t* x, int64_t ldx,
           int64_t K, float* out, int64_t ldo) {
  // Word j of the low result is a[j / 2] (j even) or b[j / 2] (j odd); the high one +16.
  alignas(64) uint16_t lo_idx[32], hi_idx[32];
  for (int j = 0; j < 32; ++j) {
    lo_idx[j] = static_cast<uint16_t>((j & 1 ? 32 : 0) + j / 2);
    hi_idx[j] = static_cast<uint16_t>(lo_idx[j] + 16);
  }
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  __mmask32 mask[S];  // columns of strip s that exist (cols may end inside any strip)
  for (int s = 0; s < S; ++s) {
    const int64_t n = std::clamp<int64_t>(cols - 32 * s, 0, 32);
    mask[s] = n == 32 ? ~__mmask32{0} : (__mmask32{1} << n) - 1;
  }
  // P segments of K walked side by side (even lengths, so no pair straddles two). The
  // accumulators are one flat array, [p][i][s][half], every loop over it unrolled: GCC 12 keeps
  // a multi-dimensional array of vectors in memory, a load and a store around each vdpbf16ps.
  const int64_t seg = (K + 2 * P - 1) / (2 * P) * 2;
  constexpr int kSeg = NX * S * 2;
  __m512 acc[P * kSeg];
#pragma GCC unroll 32
  for (int i = 0; i < P * kSeg; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < seg; kk += 2) {
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      const int64_t k = p * seg + kk;
      if (k >= K) break;
      __m512bh xv[NX];
#pragma GCC unroll 4
      for (int i = 0; i < NX; ++i) xv[i] = pair_of(x + i * ldx, k, K);
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        const __m512i a = _mm512_maskz_loadu_epi16(mask[s], w + k * ldw + 32 * s);
        const __m512i b = k + 1 < K ? _mm512_maskz_loadu_epi16(mask[s], w + (k + 1) * ldw + 32 * s)
                                    : _mm512_setzero_si512();
        const auto w0 = reinterpret_cast<__m512bh>(_mm512_permutex2var_epi16(a, lo, b));
        const auto w1 = reinterpret_cast<__m512bh>(_mm512_permutex2var_epi16(a, hi, b));
#pragma GCC unroll 4
        for (int i = 0; i < NX; ++i) {
          __m512* c = acc + p * kSeg + (i * S + s) * 2;
          c[0] = _mm512_dpbf16_ps(c[0], w0, xv[i]);
          c[1] = _mm512_dpbf16_ps(c[1], w1, xv[i]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int s = 0; s < S; ++s) {
    const __mmask16 m0 = static_cast<__mmask16>(mask[s]);
    const __mmask16 m1 = static_cast<__mmask16>(mask[s] >> 16);
#pragma GCC unroll 4
    for (int i = 0; i < NX; ++i) {
      __m512 s0 = acc[(i * S + s) * 2], s1 = acc[(i * S + s) * 2 + 1];
#pragma GCC unroll 4
      for (int p = 1; p < P; ++p) {
        s0 = _mm512_add_ps(s0, acc[p * kSeg + (i * S + s) * 2]);
        s1 = _mm512_add_ps(s1, acc[p * kSeg + (i * S + s) * 2 + 1]);
      }
      _mm512_mask_storeu_ps(out + i * ldo + 32 * s, m0, s0);
      _mm512_mask_storeu_ps(out + i * ldo + 32 * s + 16, m1, s1);
    }
  }
}

// Rows x[0, nx) against columns [0, cols) in blocks of NX rows x S strips.
template <int NX, int S, int P = 1>
void strips(const uint16_t* w, int64_t ldw, int64_t cols, const uint16_t* x, int64_t ldx,
            int64_t K, float* out, int64_t ldo) {
  for (int64_t c = 0; c < cols; c += 32 * S)
    block<NX, S, P>(w + c, ldw, std::min<int64_t>(cols - c, 32 * S), x, ldx, K, out + c, ldo);
}

}  // namespace

// Blocks of 4 rows x 2 strips, then the rows left over with as many strips (and, for one row,
// segments of K) as 16 accumulators hold.
void bf16_kmajor_rows_avx512(const uint16_t* w, int64_t ldw, int64_t cols, const uint16_t* x,
                             int64_t ldx, int64_t nx, int64_t K, float* out, int64_t ldo) {
  int64_t i = 0;
  for (; i + 4 <= nx; i += 4) strips<4, 2>(w, ldw, cols, x + i * ldx, ldx, K, out + i * ldo, ldo);
  const int64_t rest = nx - i;
  const uint16_t* xr = x + i * ldx;
  float* o = out + i * ldo;
  if (rest == 3) strips<3, 2>(w, ldw, cols, xr, ldx, K, o, ldo);
  else if (rest == 2) strips<2, 4>(w, ldw, cols, xr, ldx, K, o, ldo);
  else if (rest == 1) strips<1, 4, 2>(w, ldw, cols, xr, ldx, K, o, ldo);
}

}  // namespace gptcore
