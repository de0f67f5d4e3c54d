// MoE experts backward on CPU (float weights): per expert with tokens, recompute h = x_e W_gu^T
// and a = GLU(h) in fp32, then grouped GEMMs over the same dispatch index as the forward:
//   dW_down = (w dy)^T a,  da = (w dy) W_down,  dh = GLU'(h) da,  dW_gu = dh^T x_e,  dx_e = dh W_gu,
//   dweight(slot) = <dy, o>.  Each expert owns its weight-gradient slice and each slot its row of
// dx_slots; dx[t] sums its slots in slot order, so nothing races and results are deterministic.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/floor_divide.h>
#include <ATen/ops/mul.h>
#include <torch/library.h>

#include "checks.h"
#include "moe_experts.h"

namespace gptcore {
namespace {

// Row-parallel wrapper of the GLU forward / backward (n rows of width I).
void glu_forward_rows(Activation act, float alpha, float limit, const at::Tensor& h, at::Tensor& a) {
  const int64_t I = a.size(1);
  const float* hp = h.data_ptr<float>();
  float* ap = a.data_ptr<float>();
  at::parallel_for(0, a.size(0), 16, [&](int64_t begin, int64_t end) {
    glu_forward(act, alpha, limit, hp + begin * 2 * I, 2 * I, end - begin, I, ap + begin * I, I);
  });
}

void glu_backward_rows(Activation act, float alpha, float limit, const at::Tensor& h,
                       const at::Tensor& da, at::Tensor& dh) {
  const int64_t I = da.size(1);
  const float* hp = h.data_ptr<float>();
  const float* dap = da.data_ptr<float>();
  float* dhp = dh.data_ptr<float>();
  at::parallel_for(0, da.size(0), 16, [&](int64_t begin, int64_t end) {
    glu_backward(act, alpha, limit, hp + begin * 2 * I, dap + begin * I, end - begin, I,
                 dhp + begin * 2 * I);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
moe_experts_bwd_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& indices,
                    const at::Tensor& weights, const at::Tensor& gate_up_proj,
                    const at::Tensor& down_proj, const std::optional<at::Tensor>& gate_up_bias,
                    const std::optional<at::Tensor>& down_bias, c10::string_view activation,
                    double alpha_d, double limit_d) {
  const Activation act = parse_activation(std::string(activation));
  checks::floating("moe_experts_bwd", "x", x, 2);
  checks::expert_weights("moe_experts_bwd", x, gate_up_proj, down_proj);
  checks::moe_inputs("moe_experts_bwd", x, indices, weights, gate_up_proj.size(0),
                     down_proj.size(2), gate_up_bias, down_bias);
  checks::floating("moe_experts_bwd", "dy", dy);
  checks::shape("moe_experts_bwd", "dy", dy, x.sizes().vec());
  const float alpha = static_cast<float>(alpha_d), limit = static_cast<float>(limit_d);
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1);
  const int64_t E = gate_up_proj.size(0), I = down_proj.size(2);
  const Dispatch d = build_dispatch(indices, E, "moe_experts");
  const int64_t N = d.offsets[E];
  const at::Tensor xf = float_contiguous(x), dyf = float_contiguous(dy);
  const at::Tensor wf = float_contiguous(weights).reshape({T * k});
  const at::Tensor gub = optional_float(gate_up_bias), db = optional_float(down_bias);
  const auto fopts = x.options().dtype(at::kFloat);
  const auto lopts = x.options().dtype(at::kLong);

  at::Tensor dx_slots = at::empty({N, H}, fopts);
  at::Tensor dw = at::zeros({T * k}, fopts);
  // weight gradients in the weights' layout (K-major stays K-major: no copy in autograd)
  at::Tensor dgu = at::zeros_like(gate_up_proj, fopts), ddown = at::zeros_like(down_proj, fopts);
  at::Tensor dgub = at::zeros({E, 2 * I}, fopts), ddb = at::zeros({E, H}, fopts);
  at::Tensor sorted = at::from_blob(const_cast<int64_t*>(d.sorted.data()), {N}, lopts);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t first = d.offsets[e], n = d.count(e);
    if (n == 0) continue;
    const at::Tensor slots = sorted.narrow(0, first, n);            // (n,)
    const at::Tensor tokens = at::floor_divide(slots, k);
    const at::Tensor xe = xf.index_select(0, tokens);               // (n, H)
    const at::Tensor dye = dyf.index_select(0, tokens);             // (n, H)
    const at::Tensor we = wf.index_select(0, slots).unsqueeze(1);   // (n, 1)
    const at::Tensor w_gu = gate_up_proj[e].to(at::kFloat);         // (2I, H)
    const at::Tensor w_down = down_proj[e].to(at::kFloat);          // (H, I)
    at::Tensor h = at::mm(xe, w_gu.t());                            // (n, 2I)
    if (gub.defined()) h.add_(gub[e]);
    at::Tensor a = at::empty({n, I}, fopts);
    glu_forward_rows(act, alpha, limit, h, a);
    at::Tensor o = at::mm(a, w_down.t());                           // (n, H)
    if (db.defined()) o.add_(db[e]);
    dw.index_copy_(0, slots, at::mul(dye, o).sum(1));
    const at::Tensor dout = at::mul(dye, we);                              // (n, H)
    ddown[e].copy_(at::mm(dout.t(), a));
    ddb[e].copy_(dout.sum(0));
    const at::Tensor da = at::mm(dout, w_down);                     // (n, I)
    glu_backward_rows(act, alpha, limit, h, da, h);                 // h becomes dh (n, 2I)
    dgu[e].copy_(at::mm(h.t(), xe));
    dgub[e].copy_(h.sum(0));
    dx_slots.narrow(0, first, n).copy_(at::mm(h, w_gu));
  }

  at::Tensor dx = at::empty({T, H}, fopts);
  const float* sp = dx_slots.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* row = dxp + t * H;
      std::fill_n(row, H, 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t q = d.position[t * k + j];
        if (q < 0) continue;
        for (int64_t c = 0; c < H; ++c) row[c] += sp[q * H + c];
      }
    }
  });
  const at::Tensor empty = x.new_empty({0});
  return {dx.to(x.scalar_type()),
          dw.reshape({T, k}).to(weights.scalar_type()),
          dgu.to(gate_up_proj.scalar_type()),
          ddown.to(down_proj.scalar_type()),
          gate_up_bias.has_value() ? dgub.to(gate_up_bias->scalar_type()) : empty,
          down_bias.has_value() ? ddb.to(down_bias->scalar_type()) : empty};
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) { m.impl("moe_experts_bwd", &moe_experts_bwd_cpu); }

}  // namespace gptcore
