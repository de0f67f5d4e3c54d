// The quantised-linear kernels at each ISA level: the row loops (quantized_linear_rows.h)
// compiled in quantized_linear_{portable,avx2,avx512}.cpp, and the fused decode GEMVs of
// quantized_gemv_{avx2,avx512}.cpp; the SIMD ones are called only when cpu_features.h says so.
// No ATen here.
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

// Fused decode products, one file per ISA level (quantized_gemv_{avx2,avx512}.cpp, called only
// when cpu_features.h says so), for bf16, for int8 / int4 whose groups are whole slices of the
// kernel's width, and at AVX2 for MXFP4 (AVX-512 has the experts' mxfp4_matmul_avx512 for it);
// quantized_gemv_fits, in quantized_linear_cpu.cpp, says which:
// out[t * ldo + n] = sum_k x[t * ldx + k] * W[n, k], n in [n0, n1), T <= kQuantizedGemvMaxRows.
// Each slice of a weight row is loaded in its stored form and widened and scaled in registers,
// then multiplied into every activation row of a register block (R weight rows x T activation
// rows of accumulators), so each weight byte is read from memory once and never written out.
// Layouts both levels read:
// - bf16 and int8 rows in column order (int8: one fp32 scale per group of columns);
// - int4 and MXFP4 in blocks of 32 columns = 16 bytes, the low nibbles the even columns and the
//   high nibbles the odd ones, so x must be permuted within blocks of 32 (even columns, then
//   odd: mxfp4_permute_row) and zero-padded to whole blocks; an int4 group is a whole number of
//   blocks.
constexpr int64_t kQuantizedGemvMaxRows = 8;
// Weight rows stream from memory once per token; the hardware prefetcher alone leaves a decode
// GEMV latency-bound (docs/quantize.md), so each register block prefetches the weight rows
// this many blocks on, once per cache line.
constexpr int64_t kQuantizedGemvAheadBlocks = 2;

// Scalar parameters of one call, read by the register blocks of either level.
struct QuantizedGemvCall {
  const QWeight* w;
  const float* x;  // activation rows, stride ldx (4-bit: permuted within blocks of 32)
  int64_t ldx;
  float* out;
  int64_t ldo;
  int64_t n_end;   // rows past this one are not this call's: not prefetched
};

// Columns a slice of the kernels takes at each level (int4 and MXFP4 take blocks of 32).
constexpr int64_t kQuantizedGemvSliceAvx2 = 8;
constexpr int64_t kQuantizedGemvSliceAvx512 = 16;
bool quantized_gemv_fits(const QWeight& w, int64_t slice);
void quantized_gemv_avx2(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t ldx,
                         int64_t T, float* out, int64_t ldo);
void quantized_gemv_avx512(const QWeight& w, int64_t n0, int64_t n1, const float* x, int64_t ldx,
                           int64_t T, float* out, int64_t ldo);

extern const QuantizedLinearKernels kQuantizedLinearPortable;
extern const QuantizedLinearKernels kQuantizedLinearAvx2;
extern const QuantizedLinearKernels kQuantizedLinearAvx512;

}  // namespace gptcore
