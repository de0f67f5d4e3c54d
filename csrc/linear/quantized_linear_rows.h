// Dequantisation of weight rows and the small-T products over them, as plain loops with
// `omp simd` that GCC vectorises at the width of the file including this header
// (quantized_linear_{portable,avx2,avx512}.cpp): one rule at every ISA level. A row is expanded
// to fp32 in a scratch row that stays in L1 and is read back once per activation row, so each
// weight byte comes from memory once per call. No ATen here.
#pragma once
#include <cstdint>
#include <cstring>

#include "quantized_linear_kernels.h"

// static: each ISA's file keeps its own copy (an inline function would let the linker pick one
// ISA's code for all of them).
namespace gptcore::quantized_linear_rows {

// MXFP4 blocks -> fp32, the experts' decoder of this ISA level (mxfp4_kernels.h).
using Mxfp4Row = void (*)(const uint8_t* blocks, const uint8_t* scales, int64_t nblocks,
                          float* out);

static void bf16_row(const uint16_t* src, int64_t K, float* dst) {
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) {
    const uint32_t bits = static_cast<uint32_t>(src[k]) << 16;  // bf16 is fp32's top half
    float value;
    std::memcpy(&value, &bits, 4);
    dst[k] = value;
  }
}

static void int8_row(const int8_t* src, const float* scales, int64_t K, int64_t G, float* dst) {
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += G, ++g) {
    const int64_t k1 = k0 + G < K ? k0 + G : K;
    const float s = scales[g];
#pragma omp simd
    for (int64_t k = k0; k < k1; ++k) dst[k] = static_cast<float>(src[k]) * s;
  }
}

// Codes q + 8 two a byte, the even column in the low nibble; G is even, so every group starts
// on a byte; only the last column of an odd K sits alone in a byte's low nibble.
static void int4_row(const uint8_t* src, const float* scales, int64_t K, int64_t G, float* dst) {
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += G, ++g) {
    const int64_t k1 = k0 + G < K ? k0 + G : K;
    const float s = scales[g];
#pragma omp simd
    for (int64_t i = k0 / 2; i < k1 / 2; ++i) {
      dst[2 * i] = static_cast<float>((src[i] & 0xF) - 8) * s;
      dst[2 * i + 1] = static_cast<float>((src[i] >> 4) - 8) * s;
    }
    if (k1 % 2) dst[k1 - 1] = static_cast<float>((src[k1 / 2] & 0xF) - 8) * s;
  }
}

template <Mxfp4Row Mxfp4>
static void dequantize_row(const QWeight& w, int64_t n, float* dst) {
  const auto* data = static_cast<const uint8_t*>(w.data) + n * w.row_bytes;
  switch (w.format) {
    case QFormat::kBF16:
      return bf16_row(reinterpret_cast<const uint16_t*>(data), w.K, dst);
    case QFormat::kInt8:
      return int8_row(reinterpret_cast<const int8_t*>(data),
                      static_cast<const float*>(w.scales) + n * w.scales_per_row, w.K, w.group,
                      dst);
    case QFormat::kInt4:
      return int4_row(data, static_cast<const float*>(w.scales) + n * w.scales_per_row, w.K,
                      w.group, dst);
    case QFormat::kMXFP4:
      return Mxfp4(data, static_cast<const uint8_t*>(w.scales) + n * w.scales_per_row,
                   w.scales_per_row, dst);
  }
}

template <Mxfp4Row Mxfp4>
static void dequantize(const QWeight& w, int64_t n0, int64_t n1, float* dst, int64_t ld) {
  for (int64_t n = n0; n < n1; ++n) dequantize_row<Mxfp4>(w, n, dst + (n - n0) * ld);
}

// Rows this far ahead of the one being decoded are prefetched, as in the AVX-512 GEMVs
// (quantized_gemv_avx512.cpp; measured in docs/quantize.md).
constexpr int64_t kAheadRows = 4;

template <Mxfp4Row Mxfp4>
static void gemv(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t T, float* out,
                 int64_t ldo, float* row) {
  const int64_t K = w.K;
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t n = n0; n < n1; ++n) {
    if (n + kAheadRows < n1)
      for (int64_t b = 0; b < w.row_bytes; b += 64)
        __builtin_prefetch(data + (n + kAheadRows) * w.row_bytes + b);
    dequantize_row<Mxfp4>(w, n, row);
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * K;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < K; ++k) acc += xt[k] * row[k];
      out[t * ldo + n] = acc;
    }
  }
}

}  // namespace gptcore::quantized_linear_rows
