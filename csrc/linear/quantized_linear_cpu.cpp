// gptcore::quantized_linear on CPU tensors: y (..., N) = x (..., K) @ dequant(W).T (+ bias), W in
// a stored form of gptcore/ref.py (quantize_weight). Up to kGemvRows activation rows (decode)
// stream each weight row once through the GEMV kernels of the active ISA; more rows dequantise
// tiles of kTileRows weight rows to fp32 and multiply them with sgemm, so the dequantisation is
// paid once per tile for all T rows. Weight rows are split over threads; x and y go through fp32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "checks.h"
#include "cpu_features.h"
#include "moe_experts.h"
#include "moe_kernels.h"
#include "quantized_linear_kernels.h"

namespace gptcore {
namespace {

constexpr int64_t kGemvRows = kQuantizedGemvMaxRows;
constexpr int64_t kTileRows = 64;
// Weight elements per GEMV task: at least this many, so a small layer runs on one thread
// (a 2-thread region costs a barrier that is dear when the other core is busy).
constexpr int64_t kGemvGrainElems = 1 << 16;

const QuantizedLinearKernels& kernels() {
#if GPTCORE_X86
  if (use_avx512()) return kQuantizedLinearAvx512;
  if (use_avx2()) return kQuantizedLinearAvx2;
#endif
  return kQuantizedLinearPortable;
}

QFormat parse_format(const std::string& name) {
  if (name == "bf16") return QFormat::kBF16;
  if (name == "int8") return QFormat::kInt8;
  if (name == "int4") return QFormat::kInt4;
  if (name == "mxfp4") return QFormat::kMXFP4;
  TORCH_CHECK_VALUE(false, "gptcore.quantized_linear: format must be one of bf16, int8, int4, "
                    "mxfp4, got '", name, "'");
}

// What W's stored form must look like for K input features (gptcore/ops/quantized_linear.py).
void check_weight(const at::Tensor& data, const std::optional<at::Tensor>& scales, QFormat f,
                  int64_t group, int64_t K) {
  const char* op = "quantized_linear";
  checks::cpu(op, "data", data);
  TORCH_CHECK_VALUE(data.dim() == 2, "gptcore.quantized_linear: data must be 2-D, got shape ",
                    data.sizes());
  const int64_t N = data.size(0);
  const at::ScalarType want_type[] = {at::kBFloat16, at::kChar, at::kByte, at::kByte};
  TORCH_CHECK_TYPE(data.scalar_type() == want_type[static_cast<int>(f)],
                   "gptcore.quantized_linear: data must be ", want_type[static_cast<int>(f)],
                   " for this format, got ", data.scalar_type());
  if (f == QFormat::kBF16) {
    TORCH_CHECK_VALUE(!scales.has_value(), "gptcore.quantized_linear: scales must be None for bf16");
    checks::shape(op, "data", data, {N, K});
    return;
  }
  TORCH_CHECK_VALUE(group >= 1 && (f != QFormat::kInt4 || group % 2 == 0) &&
                        (f != QFormat::kMXFP4 || group == 32),
                    "gptcore.quantized_linear: group_size ", group, " is not valid for this format");
  TORCH_CHECK_VALUE(scales.has_value(), "gptcore.quantized_linear: scales must be given");
  checks::cpu(op, "scales", *scales);
  const int64_t groups = (K + group - 1) / group;
  const int64_t width[] = {K, K, (K + 1) / 2, 16 * groups};
  checks::shape(op, "data", data, {N, width[static_cast<int>(f)]});
  TORCH_CHECK_TYPE(scales->scalar_type() == (f == QFormat::kMXFP4 ? at::kByte : at::kFloat),
                   "gptcore.quantized_linear: scales have the wrong dtype: ", scales->scalar_type());
  checks::shape(op, "scales", *scales, {N, groups});
}

// x (T, K) -> (T, width): each row zero-padded to `width` (whole blocks of 32) and permuted
// within blocks as the 4-bit kernels read it (mxfp4_permute_row).
std::vector<float> permuted_rows(const float* x, int64_t T, int64_t K, int64_t width) {
  std::vector<float> xp(T * width, 0.f);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(x + t * K, K, xp.data() + t * width);
    mxfp4_permute_row(xp.data() + t * width, width);
  }
  return xp;
}

}  // namespace

bool quantized_gemv_fits(const QWeight& w, int64_t slice) {
  switch (w.format) {
    case QFormat::kBF16: return true;
    case QFormat::kInt8: return w.group >= w.K || w.group % slice == 0;
    case QFormat::kInt4: return w.group >= w.K || w.group % 32 == 0;
    case QFormat::kMXFP4: return slice == kQuantizedGemvSliceAvx2;  // AVX-512: the experts' kernel
  }
  return false;
}

namespace {

// out (T, N) fp32 = x (T, K) @ W.T for T <= kGemvRows: the fused kernels of the active ISA where
// there is one for this format and group layout, else the dequantise-a-row kernels.
void gemv_rows(const QWeight& w, int64_t N, const float* x, int64_t T, float* out) {
  const int64_t K = w.K, blocks32 = 32 * ((K + 31) / 32);
  const int64_t grain = std::max<int64_t>(1, kGemvGrainElems / std::max<int64_t>(K, 1));
#if GPTCORE_X86
  const bool four_bit = w.format == QFormat::kInt4 || w.format == QFormat::kMXFP4;
  if (w.format == QFormat::kMXFP4 && use_avx512()) {   // the experts' product (mxfp4_avx512.cpp)
    const std::vector<float> xp = permuted_rows(x, T, K, blocks32);
    at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
      mxfp4_matmul_avx512(static_cast<const uint8_t*>(w.data) + n0 * w.row_bytes,
                          static_cast<const uint8_t*>(w.scales) + n0 * w.scales_per_row, n1 - n0,
                          blocks32, xp.data(), blocks32, T, out + n0, N);
    });
    return;
  }
  const bool avx512 = use_avx512();
  if (use_avx2() && quantized_gemv_fits(w, avx512 ? kQuantizedGemvSliceAvx512
                                                    : kQuantizedGemvSliceAvx2)) {
    const auto gemv = avx512 ? quantized_gemv_avx512 : quantized_gemv_avx2;
    std::vector<float> xp;
    if (four_bit) xp = permuted_rows(x, T, K, blocks32);
    const float* xs = xp.empty() ? x : xp.data();
    const int64_t ldx = xp.empty() ? K : blocks32;
    at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
      gemv(w, n0, n1, xs, ldx, T, out, N);
    });
    return;
  }
#endif
  const auto& k = kernels();
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    std::vector<float> row(w.padded_k());
    k.gemv(w, n0, n1, x, T, out, N, row.data());
  });
}

// out (T, N) fp32 = x (T, K) @ W.T for T > kGemvRows: tiles of kTileRows weight rows.
void tiled_rows(const QWeight& w, int64_t N, const float* x, int64_t T, float* out) {
  const int64_t K = w.K, kp = w.padded_k();
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const auto& k = kernels();
  at::parallel_for(0, tiles, 1, [&](int64_t first, int64_t last) {
    std::vector<float> tile(kTileRows * kp);
    for (int64_t i = first; i < last; ++i) {
      const int64_t n0 = i * kTileRows, n1 = std::min(N, n0 + kTileRows);
      k.dequantize(w, n0, n1, tile.data(), kp);
      gemm_nt(T, n1 - n0, K, x, K, tile.data(), kp, 0.f, out + n0, N);
    }
  });
}

at::Tensor quantized_linear_cpu(const at::Tensor& x, const at::Tensor& data,
                                const std::optional<at::Tensor>& scales,
                                c10::string_view format, int64_t group_size,
                                const std::optional<at::Tensor>& bias) {
  const char* op = "quantized_linear";
  checks::floating(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 1, "gptcore.quantized_linear: x must have a last dim, got a scalar");
  const QFormat f = parse_format(std::string(format));
  const int64_t K = x.size(-1);
  check_weight(data, scales, f, group_size, K);
  const int64_t N = data.size(0);
  checks::optional_shape(op, "bias", bias, {N});
  const at::Tensor d = data.contiguous();
  const at::Tensor s = scales.has_value() ? scales->contiguous() : at::Tensor();
  QWeight w{f, d.data_ptr(), s.defined() ? s.data_ptr() : nullptr, K,
            f == QFormat::kBF16 ? K : group_size, d.size(1) * d.element_size(),
            s.defined() ? s.size(1) : 0};
  // (T, K); T from the leading dims, not reshape's -1, which K = 0 leaves undetermined
  const int64_t T = c10::multiply_integers(x.sizes().begin(), x.sizes().end() - 1);
  const at::Tensor xf = x.to(at::kFloat).contiguous().reshape({T, K});
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  at::Tensor out = at::empty({T, N}, xf.options());
  if (T > 0 && N > 0) {
    if (K == 0) {
      out.zero_();
    } else if (T <= kGemvRows) {
      gemv_rows(w, N, xf.data_ptr<float>(), T, out.data_ptr<float>());
    } else {
      tiled_rows(w, N, xf.data_ptr<float>(), T, out.data_ptr<float>());
    }
  }
  if (bias.has_value()) out.add_(bias->to(at::kFloat));
  return out.reshape(out_shape).to(x.scalar_type());
}

}  // namespace
}  // namespace gptcore

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("quantized_linear", &gptcore::quantized_linear_cpu);
}
