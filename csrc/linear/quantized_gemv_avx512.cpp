// AVX-512 decode products for bf16, int8 and int4 weights (see quantized_linear_kernels.h): each
// 16-wide slice of a weight row is loaded in its stored form, widened to fp32 and scaled in
// registers, and multiplied into up to 8 activation rows with FMAs, so the weights are read from
// memory once and never written back out. Register blocks of R weight rows x NX activation rows
// (R * NX accumulators + NX activation vectors within the 32 zmm registers); tails by masks.
#include <immintrin.h>

#include <algorithm>

#include "quantized_linear_kernels.h"

namespace gptcore {
namespace {

constexpr int64_t kAhead = kQuantizedGemvAheadBlocks;

inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

inline __mmask16 lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// Stored row slices -> 16 fp32 weights (unscaled for the integer formats).
inline __m512 bf16_slice(const uint16_t* p, __mmask16 m) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));   // bf16 is fp32's top half
}

inline __m512 int8_slice(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

using Rows = QuantizedGemvCall;

// Row `r` of the block kAhead blocks after the one at row n, or null past the call's rows.
template <int R>
inline const uint8_t* ahead(const Rows& a, int64_t n) {
  return n + (kAhead + 1) * R <= a.n_end
             ? static_cast<const uint8_t*>(a.w->data) + (n + kAhead * R) * a.w->row_bytes
             : nullptr;
}

// bf16 and int8: slices of 16 columns, a group being a whole number of slices (or the row).
template <int R, int NX>
void dense_block(const Rows& a, int64_t n) {
  const QWeight& w = *a.w;
  const bool is_bf16 = w.format == QFormat::kBF16;
  __m512 acc[R][NX];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NX; ++t) acc[r][t] = _mm512_setzero_ps();
  const auto* base = static_cast<const uint8_t*>(w.data) + n * w.row_bytes;
  const float* scales = is_bf16 ? nullptr : static_cast<const float*>(w.scales) + n * w.scales_per_row;
  const uint8_t* next = ahead<R>(a, n);
  const int64_t width = is_bf16 ? 2 : 1;  // bytes a weight takes
  for (int64_t k = 0; k < w.K; k += 16) {
    const __mmask16 m = lanes(w.K - k);
    __m512 xv[NX];
    for (int t = 0; t < NX; ++t) xv[t] = _mm512_maskz_loadu_ps(m, a.x + t * a.ldx + k);
    if (next != nullptr && (k * width) % 64 == 0)  // a new cache line of each row
      for (int r = 0; r < R; ++r) prefetch(next + r * w.row_bytes + k * width);
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = base + r * w.row_bytes;
      __m512 wv;
      if (is_bf16) {
        wv = bf16_slice(reinterpret_cast<const uint16_t*>(row) + k, m);
      } else {
        wv = _mm512_mul_ps(int8_slice(reinterpret_cast<const int8_t*>(row) + k, m),
                           _mm512_set1_ps(scales[r * w.scales_per_row + k / w.group]));
      }
      for (int t = 0; t < NX; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NX; ++t) a.out[t * a.ldo + n + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// int4: blocks of 32 columns = 16 bytes; the low nibbles are the even columns, which meet the
// first 16 of the block's permuted activations, the high nibbles the odd ones. A group is a
// whole number of blocks. Bytes past the row are masked off (their weights meet zero padding).
template <int R, int NX>
void int4_block(const Rows& a, int64_t n) {
  const QWeight& w = *a.w;
  __m512 acc[R][NX];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NX; ++t) acc[r][t] = _mm512_setzero_ps();
  const auto* base = static_cast<const uint8_t*>(w.data) + n * w.row_bytes;
  const float* scales = static_cast<const float*>(w.scales) + n * w.scales_per_row;
  // The 16 values a code q + 8 stands for, q = -8..7; scaled once per block, then each nibble
  // looks its weight up with one vpermps (which reads only the low 4 bits of each index lane).
  const __m512 values = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const uint8_t* next = ahead<R>(a, n);
  for (int64_t b = 0; b < w.row_bytes; b += 16) {
    const __mmask16 m = lanes(w.row_bytes - b);
    if (next != nullptr && b % 64 == 0)  // a new cache line of each row
      for (int r = 0; r < R; ++r) prefetch(next + r * w.row_bytes + b);
    __m512 x0[NX], x1[NX];
    for (int t = 0; t < NX; ++t) {
      x0[t] = _mm512_loadu_ps(a.x + t * a.ldx + 2 * b);
      x1[t] = _mm512_loadu_ps(a.x + t * a.ldx + 2 * b + 16);
    }
    for (int r = 0; r < R; ++r) {
      const __m512i codes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, base + r * w.row_bytes + b));
      const __m512 table = _mm512_mul_ps(
          values, _mm512_set1_ps(scales[r * w.scales_per_row + 2 * b / w.group]));
      const __m512 even = _mm512_permutexvar_ps(codes, table);
      const __m512 odd = _mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), table);
      for (int t = 0; t < NX; ++t) {
        acc[r][t] = _mm512_fmadd_ps(even, x0[t], acc[r][t]);
        acc[r][t] = _mm512_fmadd_ps(odd, x1[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < NX; ++t) a.out[t * a.ldo + n + r] = _mm512_reduce_add_ps(acc[r][t]);
}

template <int R, int NX>
void block(const Rows& a, int64_t n) {
  if (a.w->format == QFormat::kInt4) return int4_block<R, NX>(a, n);
  dense_block<R, NX>(a, n);
}

// R-row blocks over [n0, n1), the last rows one at a time, for NX activation rows.
template <int R, int NX>
void rows(const Rows& a, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + R <= n1; n += R) block<R, NX>(a, n);
  for (; n < n1; ++n) block<1, NX>(a, n);
}

// 16 accumulators at most 4 activation rows (4 weight rows a block), 16 again at 5-8 (2 rows).
template <int NX>
void by_rows(const Rows& a, int64_t n0, int64_t n1, int64_t T) {
  if constexpr (NX > 0) {
    if (T == NX) return rows<(NX <= 4 ? 4 : 2), NX>(a, n0, n1);
    by_rows<NX - 1>(a, n0, n1, T);
  }
}

}  // namespace

void quantized_gemv_avx512(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t ldx,
                           int64_t T, float* out, int64_t ldo) {
  by_rows<kQuantizedGemvMaxRows>(Rows{&w, x, ldx, out, ldo, n1}, n0, n1, T);
}

}  // namespace gptcore
