// AVX2 decode products for bf16, int8, int4 and MXFP4 weights, the 8-wide sibling of
// quantized_gemv_avx512.cpp (contract and layouts: quantized_linear_kernels.h). Each 8-column
// slice of a weight row is widened in registers: bf16 shifted into fp32's top half; int8
// sign-extended, converted and scaled; int4 as 8 bytes zero-extended to 8 lanes, whose low
// nibbles are 8 even columns' codes and high nibbles the 8 odd ones', converted; MXFP4 through
// a 16-entry int8 table (pshufb). Then FMAs into the block's activation rows; the 4-bit formats
// sum a block of 32 columns unscaled and scale the sum once (one FMA per block and row).
// Register blocks of R weight rows x NX activation rows; the accumulators are one flat array
// and every loop over them is fully unrolled, so that GCC keeps them in the 16 ymm registers.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "quantized_linear_kernels.h"
#include "simd_avx2.h"

namespace gptcore {
namespace {

constexpr int64_t kAhead = kQuantizedGemvAheadBlocks;
constexpr int64_t kSlice = kQuantizedGemvSliceAvx2;
// One call's parameters; int4 also reads, for activation row t and block j, the vector
// -8 * (the sum of the block's four 8-wide slices of x) at xsum8 + t * ldxsum8 + 8 * j.
struct Call : QuantizedGemvCall {
  const float* xsum8;
  int64_t ldxsum8;
};

inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// Row 0 of the block kAhead blocks after the one at row n, or null past the call's rows.
template <int R>
inline const uint8_t* ahead(const Call& a, int64_t n) {
  return n + (kAhead + 1) * R <= a.n_end
             ? static_cast<const uint8_t*>(a.w->data) + (n + kAhead * R) * a.w->row_bytes
             : nullptr;
}

// Lanes [0, n) of a maskload.
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 stored weights -> 8 fp32 (int8 unscaled).
inline __m256 bf16_slice(const uint8_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));   // bf16 is fp32's top half
}

inline __m256 int8_slice(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The slice of columns [k, k + 8) of the block's R rows (at `base`, row_bytes apart; `scales` at
// the slice's group of row 0) times NX activation rows, added into acc[r * NX + t]. A tail slice
// (kTail, fewer than 8 columns left) reads its weights from a zero-padded copy and x through a
// mask.
template <QFormat F, int R, int NX, bool kTail>
__attribute__((always_inline)) inline void dense_slice(const Call& a, const uint8_t* base,
                                                       const float* scales, int64_t k,
                                                       __m256* acc) {
  constexpr int64_t width = F == QFormat::kBF16 ? 2 : 1;  // bytes a weight takes
  const QWeight& w = *a.w;
  __m256 xv[NX];
#pragma GCC unroll 8
  for (int t = 0; t < NX; ++t)
    xv[t] = kTail ? _mm256_maskload_ps(a.x + t * a.ldx + k, lanes(w.K - k))
                  : _mm256_loadu_ps(a.x + t * a.ldx + k);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* src = base + r * w.row_bytes + k * width;
    uint8_t padded[kSlice * width] = {};
    if constexpr (kTail) {
      std::memcpy(padded, src, (w.K - k) * width);
      src = padded;
    }
    __m256 wv;
    if constexpr (F == QFormat::kBF16) {
      wv = bf16_slice(src);
    } else {
      wv = _mm256_mul_ps(int8_slice(src),
                         _mm256_broadcast_ss(scales + r * w.scales_per_row));
    }
#pragma GCC unroll 8
    for (int t = 0; t < NX; ++t) acc[r * NX + t] = _mm256_fmadd_ps(wv, xv[t], acc[r * NX + t]);
  }
}

// bf16 and int8: slices of 8 columns, a group being a whole number of slices (or the row).
template <QFormat F, int R, int NX>
void dense_block(const Call& a, int64_t n) {
  constexpr int64_t width = F == QFormat::kBF16 ? 2 : 1;
  const QWeight& w = *a.w;
  __m256 acc[R * NX];
#pragma GCC unroll 32
  for (int i = 0; i < R * NX; ++i) acc[i] = _mm256_setzero_ps();
  const auto* base = static_cast<const uint8_t*>(w.data) + n * w.row_bytes;
  const float* scales =
      F == QFormat::kBF16 ? nullptr : static_cast<const float*>(w.scales) + n * w.scales_per_row;
  const uint8_t* next = ahead<R>(a, n);
  int64_t k = 0, group_end = w.group;   // scales steps a group at group_end (no division)
  for (; k + kSlice <= w.K; k += kSlice) {
    if (next != nullptr && (k * width) % 64 == 0)  // a new cache line of each row
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) prefetch(next + r * w.row_bytes + k * width);
    if (k == group_end) {
      ++scales;
      group_end += w.group;
    }
    dense_slice<F, R, NX, false>(a, base, scales, k, acc);
  }
  if (k < w.K) dense_slice<F, R, NX, true>(a, base, scales + (k == group_end), k, acc);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NX; ++t) a.out[t * a.ldo + n + r] = hsum(acc[r * NX + t]);
}

// int4: the 16 bytes at byte b of a row are columns [2b, 2b + 32), a block; bytes [b, b + 8)
// hold the even columns that meet the permuted activations [2b, 2b + 8) (low nibbles) and the odd
// ones that meet [2b + 16, 2b + 24) (high nibbles), bytes [b + 8, b + 16) the next 8 of each.
// The codes c = q + 8 are multiplied unscaled, onto the block's -8 * sum(x) (so the sum is of
// q * x, the weights over s), and the block's sum is scaled once: one FMA chain per block and row,
// which also keeps the accumulators' own chains short. `scales` is at the block's group of row 0.
// A tail block reads a zero-padded copy (its codes meet the activations' zero padding).
template <int R, int NX, bool kTail>
__attribute__((always_inline)) inline void int4_slices(const Call& a, const uint8_t* base,
                                                       const float* scales, int64_t b,
                                                       __m256* acc) {
  const QWeight& w = *a.w;
  const __m256i low4 = _mm256_set1_epi32(0xF);
  const float* x = a.x + 2 * b;
  const float* xsum8 = a.xsum8 + 8 * (b / 16);
  alignas(16) uint8_t padded[R][16] = {};
  if constexpr (kTail)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) std::memcpy(padded[r], base + r * w.row_bytes + b, w.row_bytes - b);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* src = kTail ? padded[r] : base + r * w.row_bytes + b;
    const __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    const __m256i c1 =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + 8)));
    const __m256 even0 = _mm256_cvtepi32_ps(_mm256_and_si256(c0, low4));
    const __m256 odd0 = _mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 4));
    const __m256 even1 = _mm256_cvtepi32_ps(_mm256_and_si256(c1, low4));
    const __m256 odd1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(c1, 4));
    const __m256 scale = _mm256_broadcast_ss(scales + r * w.scales_per_row);
#pragma GCC unroll 8
    for (int t = 0; t < NX; ++t) {
      const float* xt = x + t * a.ldx;
      __m256 sum = _mm256_fmadd_ps(even0, _mm256_loadu_ps(xt),
                                   _mm256_loadu_ps(xsum8 + t * a.ldxsum8));
      sum = _mm256_fmadd_ps(odd0, _mm256_loadu_ps(xt + 16), sum);
      sum = _mm256_fmadd_ps(even1, _mm256_loadu_ps(xt + 8), sum);
      sum = _mm256_fmadd_ps(odd1, _mm256_loadu_ps(xt + 24), sum);
      acc[r * NX + t] = _mm256_fmadd_ps(sum, scale, acc[r * NX + t]);
    }
  }
}

template <int R, int NX>
void int4_block(const Call& a, int64_t n) {
  const QWeight& w = *a.w;
  __m256 acc[R * NX];
#pragma GCC unroll 32
  for (int i = 0; i < R * NX; ++i) acc[i] = _mm256_setzero_ps();
  const auto* base = static_cast<const uint8_t*>(w.data) + n * w.row_bytes;
  const float* scales = static_cast<const float*>(w.scales) + n * w.scales_per_row;
  const uint8_t* next = ahead<R>(a, n);
  int64_t b = 0, group_end = w.group / 2;   // bytes; scales steps a group there (no division)
  for (; b + 16 <= w.row_bytes; b += 16) {
    if (next != nullptr && b % 64 == 0)  // a new cache line of each row
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) prefetch(next + r * w.row_bytes + b);
    if (b == group_end) {
      ++scales;
      group_end += w.group / 2;
    }
    int4_slices<R, NX, false>(a, base, scales, b, acc);
  }
  if (b < w.row_bytes) int4_slices<R, NX, true>(a, base, scales + (b == group_end), b, acc);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NX; ++t) a.out[t * a.ldo + n + r] = hsum(acc[r * NX + t]);
}

// MXFP4: int4's block layout (whole blocks: rows are stored padded), e2m1 codes (bit 3 the
// sign) and one e8m0 scale byte a block. Each nibble looks its weight's 2 * value up as an int8
// (exact) with pshufb, which is widened and converted; the block's sum is scaled by
// 2^(e - 128) once, a power of two, so the result is the dequantised weights' up to rounding
// order (byte 0 stands for 2^-127, as everywhere). The scales come from a table (a scalar
// exponent-field build and broadcast cost about a tenth of a block's instructions).
struct E8M0Halves {
  float value[256];
  constexpr E8M0Halves() : value() {
    float p = 0x1p-128f;   // 2^(e - 128), e = 0: subnormal, exact, as are its doublings
    for (int e = 0; e < 256; ++e) {
      value[e] = p;
      if (e < 255) p *= 2;
    }
  }
};
constexpr E8M0Halves kE8M0Halves;

template <int R, int NX>
void mxfp4_block(const Call& a, int64_t n) {
  const QWeight& w = *a.w;
  const __m128i twice = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  __m256 acc[R * NX];
#pragma GCC unroll 32
  for (int i = 0; i < R * NX; ++i) acc[i] = _mm256_setzero_ps();
  const auto* base = static_cast<const uint8_t*>(w.data) + n * w.row_bytes;
  const auto* scales = static_cast<const uint8_t*>(w.scales) + n * w.scales_per_row;
  const uint8_t* next = ahead<R>(a, n);
  for (int64_t b = 0, j = 0; b < w.row_bytes; b += 16, ++j) {
    if (next != nullptr && b % 64 == 0)  // a new cache line of each row
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) prefetch(next + r * w.row_bytes + b);
    const float* x = a.x + 2 * b;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m128i bytes =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + r * w.row_bytes + b));
      const __m128i even = _mm_shuffle_epi8(twice, _mm_and_si128(bytes, low4));
      const __m128i odd = _mm_shuffle_epi8(twice, _mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
      const __m256 even0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(even));
      const __m256 even1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(even, 8)));
      const __m256 odd0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(odd));
      const __m256 odd1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(odd, 8)));
      const __m256 scale =
          _mm256_broadcast_ss(&kE8M0Halves.value[scales[r * w.scales_per_row + j]]);
#pragma GCC unroll 8
      for (int t = 0; t < NX; ++t) {
        const float* xt = x + t * a.ldx;
        __m256 sum = _mm256_mul_ps(even0, _mm256_loadu_ps(xt));
        sum = _mm256_fmadd_ps(odd0, _mm256_loadu_ps(xt + 16), sum);
        sum = _mm256_fmadd_ps(even1, _mm256_loadu_ps(xt + 8), sum);
        sum = _mm256_fmadd_ps(odd1, _mm256_loadu_ps(xt + 24), sum);
        acc[r * NX + t] = _mm256_fmadd_ps(sum, scale, acc[r * NX + t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < NX; ++t) a.out[t * a.ldo + n + r] = hsum(acc[r * NX + t]);
}

template <QFormat F, int R, int NX>
void block(const Call& a, int64_t n) {
  if constexpr (F == QFormat::kInt4) {
    int4_block<R, NX>(a, n);
  } else if constexpr (F == QFormat::kMXFP4) {
    mxfp4_block<R, NX>(a, n);
  } else {
    dense_block<F, R, NX>(a, n);
  }
}

// Weight rows a block takes for NX activation rows, within 16 ymm registers: R * NX
// accumulators, NX activation vectors and the decoded slice (bf16, int8); int4's four decoded
// slices and block sums leave room for 4 rows at one activation row only. With one weight row a
// block, x is read straight from L1. (objdump: no ymm stack access in any block's loop.)
template <QFormat F, int NX>
constexpr int block_rows() {
  if (F == QFormat::kInt4 || F == QFormat::kMXFP4) return NX == 1 ? 4 : 1;
  if (NX <= 2) return 4;
  return NX <= 4 ? 2 : 1;
}

// R-row blocks over [n0, n1), the last rows one at a time, for NX activation rows.
template <QFormat F, int NX>
void rows(const Call& a, int64_t n0, int64_t n1) {
  constexpr int R = block_rows<F, NX>();
  int64_t n = n0;
  for (; n + R <= n1; n += R) block<F, R, NX>(a, n);
  for (; n < n1; ++n) block<F, 1, NX>(a, n);
}

template <QFormat F, int NX>
void by_rows(const Call& a, int64_t n0, int64_t n1, int64_t T) {
  if constexpr (NX > 0) {
    if (T == NX) return rows<F, NX>(a, n0, n1);
    by_rows<F, NX - 1>(a, n0, n1, T);
  }
}

}  // namespace

void quantized_gemv_avx2(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t ldx,
                         int64_t T, float* out, int64_t ldo) {
  Call a{{&w, x, ldx, out, ldo, n1}, nullptr, 0};
  constexpr int64_t kMax = kQuantizedGemvMaxRows;
  std::vector<float> xsum8;
  if (w.format == QFormat::kInt4) {
    const int64_t blocks = (w.row_bytes + 15) / 16;
    xsum8.resize(T * blocks * 8);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < blocks; ++j) {
        const float* xb = x + t * ldx + 32 * j;
        const __m256 sum = _mm256_add_ps(
            _mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
            _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24)));
        _mm256_storeu_ps(xsum8.data() + (t * blocks + j) * 8,
                         _mm256_mul_ps(sum, _mm256_set1_ps(-8.f)));
      }
    a.xsum8 = xsum8.data();
    a.ldxsum8 = blocks * 8;
  }
  switch (w.format) {
    case QFormat::kBF16: return by_rows<QFormat::kBF16, kMax>(a, n0, n1, T);
    case QFormat::kInt8: return by_rows<QFormat::kInt8, kMax>(a, n0, n1, T);
    case QFormat::kInt4: return by_rows<QFormat::kInt4, kMax>(a, n0, n1, T);
    case QFormat::kMXFP4: return by_rows<QFormat::kMXFP4, kMax>(a, n0, n1, T);
  }
}

}  // namespace gptcore
