// gptcore::rms_norm_fwd / rms_norm_bwd on CPU tensors: rows split into fixed chunks over
// at::parallel_for, each chunk with its own partial weight gradient summed in chunk order, so
// results do not depend on the thread count. Non-fp32 inputs are converted to fp32 and back.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "checks.h"
#include "cpu_features.h"
#include "rms_norm_kernels.h"

namespace gptcore {
namespace {

// Rows per task: at least torch's grain (32768 elements), so a small tensor runs on one thread;
// a 2-thread region costs a barrier that is dear when the other core is busy.
int64_t chunk_rows(int64_t dim) { return std::max<int64_t>(16, (32768 + dim - 1) / std::max<int64_t>(dim, 1)); }

const RmsNormKernels& kernels() {
#if GPTCORE_X86
  if (use_avx512()) return kRmsNormAvx512;
  if (use_avx2()) return kRmsNormAvx2;
#endif
  return kRmsNormPortable;
}

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

const float* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<float>() : nullptr;
}

void check_rows(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  checks::floating(op, name, t);
  checks::shape(op, name, t, x.sizes().vec());
}

// x (..., dim) [+ residual] -> y (..., dim), h (..., dim) (empty without a residual), rstd (...) fp32
std::tuple<at::Tensor, at::Tensor, at::Tensor> rms_norm_fwd_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& weight, double eps) {
  const char* op = "rms_norm_fwd";
  checks::floating(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 1, "gptcore.rms_norm_fwd: x must have a last dim, got a scalar");
  const int64_t dim = x.size(-1);
  if (residual.has_value()) check_rows(op, "residual", *residual, x);
  checks::optional_shape(op, "weight", weight, {dim});
  const int64_t rows = dim > 0 ? x.numel() / dim : 0;
  const auto xf = f32(x);
  const auto rf = residual.has_value() ? std::optional<at::Tensor>(f32(*residual)) : std::nullopt;
  const auto wf = weight.has_value() ? std::optional<at::Tensor>(f32(*weight)) : std::nullopt;
  auto y = at::empty(xf.sizes(), xf.options());
  auto h = rf.has_value() ? at::empty(xf.sizes(), xf.options()) : at::empty({0}, xf.options());
  auto lead = x.sizes().vec();
  lead.pop_back();
  auto rstd = at::empty(lead, xf.options());
  const auto& k = kernels();
  const float *xp = xf.data_ptr<float>(), *rp = data_or_null(rf), *wp = data_or_null(wf);
  float *yp = y.data_ptr<float>(), *hp = h.data_ptr<float>(), *sp = rstd.data_ptr<float>();
  at::parallel_for(0, rows, chunk_rows(dim), [&](int64_t begin, int64_t end) {
    k.forward(xp, rp, wp, yp, hp, sp, begin, end, dim, static_cast<float>(eps));
  });
  return {y.to(x.scalar_type()), h.to(x.scalar_type()), rstd};
}

// -> dx (the gradient of x and of residual: the same), dweight (dim,) fp32 (empty without weight)
std::tuple<at::Tensor, at::Tensor> rms_norm_bwd_cpu(
    const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& x,
    const std::optional<at::Tensor>& residual, const at::Tensor& h,
    const std::optional<at::Tensor>& weight, const at::Tensor& rstd, double /*eps: in rstd*/) {
  const char* op = "rms_norm_bwd";
  checks::floating(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 1, "gptcore.rms_norm_bwd: x must have a last dim, got a scalar");
  const int64_t dim = x.size(-1);
  check_rows(op, "dy", dy, x);
  if (residual.has_value()) {
    check_rows(op, "residual", *residual, x);
    check_rows(op, "h", h, x);
    check_rows(op, "dh", dh, x);
  }
  checks::optional_shape(op, "weight", weight, {dim});
  const int64_t rows = dim > 0 ? x.numel() / dim : 0;
  checks::floating(op, "rstd", rstd);
  TORCH_CHECK_VALUE(rstd.numel() == rows, "gptcore.rms_norm_bwd: rstd must have one value per row (",
                    rows, "), got ", rstd.numel());
  const auto src = f32(residual.has_value() ? h : x);
  const auto dyf = f32(dy);
  const auto dhf = residual.has_value() ? std::optional<at::Tensor>(f32(dh)) : std::nullopt;
  const auto wf = weight.has_value() ? std::optional<at::Tensor>(f32(*weight)) : std::nullopt;
  const auto sf = f32(rstd);
  auto dx = at::empty(src.sizes(), src.options());
  const int64_t per_chunk = chunk_rows(dim);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  auto partial = at::zeros({weight.has_value() ? chunks : 0, dim}, src.options());
  const auto& k = kernels();
  const float *dyp = dyf.data_ptr<float>(), *dhp = data_or_null(dhf), *srcp = src.data_ptr<float>();
  const float *wp = data_or_null(wf), *sp = sf.data_ptr<float>();
  float *dxp = dx.data_ptr<float>(), *pp = partial.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * per_chunk, end = std::min(rows, begin + per_chunk);
      k.backward(dyp, dhp, srcp, wp, sp, dxp, wp != nullptr ? pp + c * dim : nullptr, begin, end,
                 dim);
    }
  });
  auto dweight = at::empty({0}, x.options());
  if (weight.has_value()) {                       // chunk order: the same sum at any thread count
    auto total = at::zeros({dim}, src.options());
    float* tp = total.data_ptr<float>();
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t d = 0; d < dim; ++d) tp[d] += pp[c * dim + d];
    dweight = total.to(weight->scalar_type());
  }
  return {dx.to(x.scalar_type()), dweight};
}

}  // namespace
}  // namespace gptcore

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("rms_norm_fwd", &gptcore::rms_norm_fwd_cpu);
  m.impl("rms_norm_bwd", &gptcore::rms_norm_bwd_cpu);
}
