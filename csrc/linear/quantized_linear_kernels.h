// The quantised-linear row kernels at each ISA level: the same loops (quantized_linear_rows.h)
// compiled in quantized_linear_{portable,avx2,avx512}.cpp; the last two are called only when
// cpu_features.h says so. No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

enum class QFormat { kBF16, kInt8, kInt4, kMXFP4 };

// A weight W (N, K) in one of the stored forms of gptcore/ref.py (quantize_weight).
struct QWeight {
  QFormat format;
  const void* data;     // row n starts at data + n * row_bytes
  const void* scales;   // fp32 (int8, int4) or e8m0 bytes (mxfp4), scales_per_row a row; bf16: null
  int64_t K;            // input features
  int64_t group;        // columns per scale (int8, int4); 32 for mxfp4
  int64_t row_bytes;
  int64_t scales_per_row;
  // Floats a dequantised row takes: K, or K rounded up to whole MXFP4 blocks (zeros past K).
  int64_t padded_k() const { return format == QFormat::kMXFP4 ? 32 * scales_per_row : K; }
};

struct QuantizedLinearKernels {
  // Rows [n0, n1) of W as fp32 into dst ((n1 - n0) x ld, ld >= padded_k()).
  void (*dequantize)(const QWeight& w, int64_t n0, int64_t n1, float* dst, int64_t ld);
  // out[t * ldo + n] = sum_k x[t * K + k] * W[n, k] for n in [n0, n1), t < T: each weight row
  // read once for all T activation rows (decode). `row` is scratch of padded_k() floats.
  void (*gemv)(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t T, float* out,
               int64_t ldo, float* row);
};

// Fused AVX-512 decode products (quantized_gemv_avx512.cpp, called only when use_avx512()) for
// bf16, and for int8 / int4 whose groups are whole 16- / 32-column slices (fits says which):
// out[t * ldo + n] = sum_k x[t * ldx + k] * W[n, k], n in [n0, n1), T <= kQuantizedGemvMaxRows.
// int4 reads x permuted within blocks of 32 (even columns, then odd: mxfp4_permute_row) and
// zero-padded to whole blocks.
constexpr int64_t kQuantizedGemvMaxRows = 8;
bool quantized_gemv_avx512_fits(const QWeight& w);
void quantized_gemv_avx512(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t ldx,
                           int64_t T, float* out, int64_t ldo);

extern const QuantizedLinearKernels kQuantizedLinearPortable;
extern const QuantizedLinearKernels kQuantizedLinearAvx2;
extern const QuantizedLinearKernels kQuantizedLinearAvx512;

}  // namespace gptcore
