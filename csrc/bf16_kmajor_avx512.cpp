// K-major bf16 weights times bf16 rows (see bf16_kmajor.h): register blocks of 32 output
// columns x 4 activation rows, 8 fp32 accumulators. Per pair of k: one 64-byte load of each
// weight row, two permutes that interleave them into (w[k][c], w[k+1][c]) pairs, and one
// vdpbf16ps per accumulator against the broadcast (x[k], x[k+1]) pair.
#include <immintrin.h>

#include "bf16_kmajor.h"

namespace gptcore {
namespace {

// (x[k], x[k+1]) as one 32-bit lane in every lane; x[k+1] read as 0 past K.
inline __m512bh pair_of(const uint16_t* x, int64_t k, int64_t K) {
  uint32_t bits = x[k];
  if (k + 1 < K) bits |= static_cast<uint32_t>(x[k + 1]) << 16;
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(bits)));
}

template <int NX>
void block(const uint16_t* w, int64_t ldw, int64_t cols, const uint16_t* x, int64_t ldx,
           int64_t K, float* out, int64_t ldo) {
  // Word j of the low result is a[j / 2] (j even) or b[j / 2] (j odd); the high one +16.
  alignas(64) uint16_t lo_idx[32], hi_idx[32];
  for (int j = 0; j < 32; ++j) {
    lo_idx[j] = static_cast<uint16_t>((j & 1 ? 32 : 0) + j / 2);
    hi_idx[j] = static_cast<uint16_t>(lo_idx[j] + 16);
  }
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  const __mmask32 mask = cols >= 32 ? ~__mmask32{0} : (__mmask32{1} << cols) - 1;
  __m512 acc[NX][2];
  for (int i = 0; i < NX; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 2) {
    const __m512i a = _mm512_maskz_loadu_epi16(mask, w + k * ldw);
    const __m512i b = k + 1 < K ? _mm512_maskz_loadu_epi16(mask, w + (k + 1) * ldw)
                                : _mm512_setzero_si512();
    const auto w0 = reinterpret_cast<__m512bh>(_mm512_permutex2var_epi16(a, lo, b));
    const auto w1 = reinterpret_cast<__m512bh>(_mm512_permutex2var_epi16(a, hi, b));
    for (int i = 0; i < NX; ++i) {
      const __m512bh xv = pair_of(x + i * ldx, k, K);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], w0, xv);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], w1, xv);
    }
  }
  const __mmask16 m0 = static_cast<__mmask16>(mask), m1 = static_cast<__mmask16>(mask >> 16);
  for (int i = 0; i < NX; ++i) {
    _mm512_mask_storeu_ps(out + i * ldo, m0, acc[i][0]);
    _mm512_mask_storeu_ps(out + i * ldo + 16, m1, acc[i][1]);
  }
}

}  // namespace

void bf16_kmajor_rows_avx512(const uint16_t* w, int64_t ldw, int64_t cols, const uint16_t* x,
                             int64_t ldx, int64_t nx, int64_t K, float* out, int64_t ldo) {
  for (int64_t c = 0; c < cols; c += 32) {
    const int64_t n = cols - c < 32 ? cols - c : 32;
    int64_t i = 0;
    for (; i + 4 <= nx; i += 4) block<4>(w + c, ldw, n, x + i * ldx, ldx, K, out + i * ldo + c, ldo);
    const int64_t rest = nx - i;
    const uint16_t* xr = x + i * ldx;
    float* o = out + i * ldo + c;
    if (rest == 3) block<3>(w + c, ldw, n, xr, ldx, K, o, ldo);
    else if (rest == 2) block<2>(w + c, ldw, n, xr, ldx, K, o, ldo);
    else if (rest == 1) block<1>(w + c, ldw, n, xr, ldx, K, o, ldo);
  }
}

}  // namespace gptcore
