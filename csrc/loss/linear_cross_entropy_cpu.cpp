// gptcore::linear_cross_entropy_fwd / _bwd on CPU tensors: the LM head (x @ weight^T) and its
// cross-entropy over chunks of tokens, so only one chunk's fp32 logits (rows, V) exist at a time.
// One exp pass over a chunk's logits gives both the loss and, with gradients wanted, the
// chunk's gradient (in the logits' memory),
//   g = (softmax(logits) (1 + 2 z lse) - onehot(target)) * kept / n_kept,
// and dx = g @ weight, dweight += g^T @ x_chunk follow from it (the same three GEMMs as the
// unfused head's forward and backward). The GEMMs and row passes are ATen's (MKL / oneDNN and
// torch's vectorised kernels at the CPU's ISA), so this file has no per-ISA variants.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"

namespace gptcore {
namespace {

// fp32 logits of one chunk: 16 MB, 128 rows at a 32k vocabulary. dweight's update reads and
// writes all of (V, d) once per chunk, so much smaller chunks trade memory for bandwidth.
constexpr int64_t kChunkBytes = 16 << 20;

void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& target, int64_t ignore_index, double z_loss) {
  checks::floating(op, "x", x, 2);
  checks::floating(op, "weight", weight, 2);
  TORCH_CHECK_TYPE(weight.scalar_type() == x.scalar_type(), "gptcore.", op,
                   ": weight must have x's dtype ", x.scalar_type(), ", got ",
                   weight.scalar_type());
  checks::shape(op, "weight", weight, {weight.size(0), x.size(1)});
  checks::positive(op, "weight.size(0) (the vocabulary)", weight.size(0));
  checks::cpu(op, "target", target);
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "gptcore.", op,
                   ": target must be an int64 tensor, got ", target.scalar_type());
  checks::shape(op, "target", target, {x.size(0)});
  TORCH_CHECK_VALUE(z_loss >= 0, "gptcore.", op, ": z_loss must be >= 0, got ", z_loss);
  if (target.numel() == 0) return;
  const auto bad = target.ne(ignore_index).logical_and(
      target.lt(0).logical_or(target.ge(weight.size(0))));
  TORCH_CHECK_VALUE(!bad.any().item<bool>(), "gptcore.", op, ": target must hold ids in [0, ",
                    weight.size(0), ") or ignore_index=", ignore_index, ", got ",
                    target.masked_select(bad)[0].item<int64_t>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_cross_entropy_fwd_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& target, int64_t ignore_index,
    double z_loss, bool with_grad) {
  constexpr const char* op = "linear_cross_entropy_fwd";
  check_inputs(op, x, weight, target, ignore_index, z_loss);
  const int64_t N = x.size(0), V = weight.size(0), d = x.size(1);
  const auto xf = x.to(at::kFloat).contiguous();
  const auto wf = weight.to(at::kFloat).contiguous();
  const auto kept = target.ne(ignore_index);                              // (N,)
  const double scale = 1.0 / std::max<int64_t>(kept.count_nonzero().item<int64_t>(), 1);
  // no op mixing dtypes or wrapping scalars here: each would add a copy_ of a small vector
  const auto dropped = kept.logical_not();
  const auto safe_target = at::where(kept, target, at::zeros_like(target)).unsqueeze(1);  // (N, 1)
  const auto kept_scaled = at::full({N}, scale, xf.options()).masked_fill_(dropped, 0.0);  // (N,)
  auto dx = with_grad ? at::empty({N, d}, xf.options()) : at::empty({0}, x.options());
  auto dweight = with_grad ? at::zeros({V, d}, wf.options()) : at::empty({0}, weight.options());
  auto loss = at::zeros({}, xf.options());
  const int64_t chunk = std::clamp<int64_t>(kChunkBytes / (4 * std::max<int64_t>(V, 1)), 1,
                                            std::max<int64_t>(N, 1));
  for (int64_t start = 0; start < N; start += chunk) {
    const int64_t rows = std::min(chunk, N - start);
    const auto xc = xf.narrow(0, start, rows);                            // (rows, d)
    const auto tc = safe_target.narrow(0, start, rows);                   // (rows, 1)
    const auto wc = kept_scaled.narrow(0, start, rows);                   // (rows,)
    auto logits = at::mm(xc, wf.t());                                     // (rows, V)
    const auto picked = logits.gather(1, tc).squeeze(1);                  // (rows,)
    const auto row_max = logits.amax(1);                                  // (rows,)
    // one exp pass serves the loss and the gradient: e = exp(logits - max), in place
    auto e = logits.sub_(row_max.unsqueeze(1)).exp_();
    const auto sum = e.sum(1);                                            // (rows,)
    const auto lse = sum.log().add_(row_max);                             // (rows,)
    auto per_token = lse - picked;
    if (z_loss > 0) per_token.add_(lse * lse, z_loss);
    loss.add_(at::dot(per_token, wc));
    if (!with_grad) continue;
    // softmax (1 + 2 z lse) * kept / n_kept = e * row_scale, then - onehot * kept / n_kept
    auto row_scale = wc / sum;
    if (z_loss > 0) row_scale.mul_(lse * (2 * z_loss) + 1);
    auto g = e.mul_(row_scale.unsqueeze(1));
    g.scatter_add_(1, tc, wc.neg().unsqueeze(1));
    auto dx_rows = dx.narrow(0, start, rows);                             // (rows, d)
    at::mm_out(dx_rows, g, wf);
    dweight.addmm_(g.t(), xc);                                            // (V, d)
  }
  if (with_grad) {
    dx = dx.to(x.scalar_type());
    dweight = dweight.to(weight.scalar_type());
  }
  return {loss, dx, dweight};
}

// The gradients were computed in the forward pass for a loss gradient of 1: scale them.
std::tuple<at::Tensor, at::Tensor> linear_cross_entropy_bwd_cpu(
    const at::Tensor& dloss, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& target, int64_t ignore_index, double z_loss, const at::Tensor& dx,
    const at::Tensor& dweight) {
  constexpr const char* op = "linear_cross_entropy_bwd";
  checks::floating(op, "dloss", dloss, 0);
  checks::floating(op, "x", x, 2);
  checks::floating(op, "weight", weight, 2);
  checks::floating(op, "dx", dx);
  checks::floating(op, "dweight", dweight);
  checks::shape(op, "dx", dx, x.sizes().vec());
  checks::shape(op, "dweight", dweight, weight.sizes().vec());
  const auto s = dloss.to(at::kFloat);
  return {(dx.to(at::kFloat) * s).to(x.scalar_type()),
          (dweight.to(at::kFloat) * s).to(weight.scalar_type())};
}

}  // namespace
}  // namespace gptcore

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("linear_cross_entropy_fwd", &gptcore::linear_cross_entropy_fwd_cpu);
  m.impl("linear_cross_entropy_bwd", &gptcore::linear_cross_entropy_bwd_cpu);
}
