// gptcore::rotary_fwd / rotary_bwd on CPU tensors: the rows of q and k read through their
// strides (views of a fused projection, transposed layouts) in one parallel loop, written
// contiguous. No reductions, so results do not depend on the thread count. Non-fp32 inputs are
// converted to fp32 and back.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"
#include "cpu_features.h"
#include "rotary_kernels.h"

namespace gptcore {
namespace {

const RotaryKernels& kernels() {
#if GPTCORE_X86
  if (use_avx512()) return kRotaryAvx512;
  if (use_avx2()) return kRotaryAvx2;
#endif
  return kRotaryPortable;
}

// fp32 with a unit stride along D: a view of a float projection stays as it is.
at::Tensor rows_f32(const at::Tensor& t) {
  auto f = t.to(at::kFloat);
  return f.size(3) > 1 && f.stride(3) != 1 ? f.contiguous() : f;
}

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                  const at::Tensor& sin) {
  checks::floating(op, "q", q, 4);
  checks::floating(op, "k", k, 4);
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type(), "gptcore.", op,
                   ": q/k must share one dtype, got ", q.scalar_type(), " and ", k.scalar_type());
  const int64_t B = q.size(0), S = q.size(1), D = q.size(3);
  TORCH_CHECK_VALUE(k.size(0) == B && k.size(1) == S && k.size(3) == D, "gptcore.", op,
                    ": k must have shape (", B, ", ", S, ", Hk, ", D, ") like q's, got ",
                    k.sizes());
  TORCH_CHECK_VALUE(D % 2 == 0, "gptcore.", op, ": q must have an even head dim D, got D=", D);
  for (const auto& [name, t] : {std::pair{"cos", &cos}, std::pair{"sin", &sin}}) {
    checks::floating(op, name, *t, 3);
    TORCH_CHECK_VALUE((t->size(0) == 1 || t->size(0) == B) && t->size(1) == S && t->size(2) == D,
                      "gptcore.", op, ": ", name, " must have shape (1 or ", B, ", ", S, ", ", D,
                      "), got ", t->sizes());
  }
}

// y = x * cos + rotate(x) * sin for q and k (or the adjoint, `transpose`), as contiguous tensors.
std::tuple<at::Tensor, at::Tensor> rotate_both(const char* op, const at::Tensor& q,
                                               const at::Tensor& k, const at::Tensor& cos,
                                               const at::Tensor& sin, bool interleaved,
                                               bool transpose) {
  check_inputs(op, q, k, cos, sin);
  const auto cf = cos.to(at::kFloat).contiguous(), sf = sin.to(at::kFloat).contiguous();
  const at::Tensor xs[2] = {rows_f32(q), rows_f32(k)};
  at::Tensor ys[2];
  RotaryRows in[2];
  for (int i = 0; i < 2; ++i) {
    const auto& x = xs[i];
    ys[i] = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    in[i] = {x.data_ptr<float>(), x.stride(0), x.stride(1), x.stride(2), cf.data_ptr<float>(),
             sf.data_ptr<float>(), cf.size(0) > 1 ? x.size(1) * x.size(3) : 0,
             x.size(1), x.size(2), x.size(3)};
  }
  const int64_t D = q.size(3), rows_q = q.numel() / std::max<int64_t>(D, 1);
  const int64_t rows = rows_q + k.numel() / std::max<int64_t>(D, 1);
  const auto& kern = kernels();
  float* yq = ys[0].data_ptr<float>();
  float* yk = ys[1].data_ptr<float>();
  // Rows per task: at least torch's grain (32768 elements), so a decode step stays on one thread.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(D, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    if (begin < rows_q)
      kern.rows(in[0], yq, begin, std::min(end, rows_q), interleaved, transpose);
    if (end > rows_q)
      kern.rows(in[1], yk, std::max(begin, rows_q) - rows_q, end - rows_q, interleaved,
                transpose);
  });
  return {ys[0].to(q.scalar_type()), ys[1].to(k.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> rotary_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& cos, const at::Tensor& sin,
                                                  bool interleaved) {
  return rotate_both("rotary_fwd", q, k, cos, sin, interleaved, /*transpose=*/false);
}

std::tuple<at::Tensor, at::Tensor> rotary_bwd_cpu(const at::Tensor& dq, const at::Tensor& dk,
                                                  const at::Tensor& cos, const at::Tensor& sin,
                                                  bool interleaved) {
  return rotate_both("rotary_bwd", dq, dk, cos, sin, interleaved, /*transpose=*/true);
}

}  // namespace
}  // namespace gptcore

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("rotary_fwd", &gptcore::rotary_fwd_cpu);
  m.impl("rotary_bwd", &gptcore::rotary_bwd_cpu);
}
