// Argument checks at the entry of every CPU op: a direct torch.ops.gptcore.* call that skips the
// Python validation (gptcore/ops/validate.py) must get a Python exception (ValueError or
// TypeError through TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), never a crash or an out-of-bounds
// access. The kernels index with int64 and make their inputs contiguous, so what is checked here
// is what they read: ranks, matching sizes, dtypes, the CPU device, and the ranges of indices.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <vector>

namespace gptcore::checks {

// `t` lives in host memory: the kernels read it through data_ptr on the CPU.
inline void cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "gptcore.", op, ": ", name,
                    " must be a CPU tensor, got one on ", t.device());
}

// A float32 / float16 / bfloat16 tensor of rank `rank` (any rank when rank < 0) on the CPU.
// float64 is refused: the kernels compute in fp32, and a float64 caller (gradcheck) expects
// float64 precision; the reference backend takes it.
inline void floating(const char* op, const char* name, const at::Tensor& t, int64_t rank = -1) {
  cpu(op, name, t);
  const auto dtype = t.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "gptcore.", op, ": ", name, " must be float32, float16 or bfloat16, got ",
                   dtype);
  TORCH_CHECK_VALUE(rank < 0 || t.dim() == rank, "gptcore.", op, ": ", name, " must be ", rank,
                    "-D, got shape ", t.sizes());
}

// An integer tensor (expert ids, offsets) of rank `rank` on the CPU.
inline void integral(const char* op, const char* name, const at::Tensor& t, int64_t rank) {
  cpu(op, name, t);
  TORCH_CHECK_TYPE(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), "gptcore.", op,
                   ": ", name, " must be an integer tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == rank, "gptcore.", op, ": ", name, " must be ", rank,
                    "-D, got shape ", t.sizes());
}

inline void shape(const char* op, const char* name, const at::Tensor& t,
                  const std::vector<int64_t>& want) {
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(want), "gptcore.", op, ": ", name,
                    " must have shape ", at::IntArrayRef(want), ", got ", t.sizes());
}

// An optional floating tensor that, when given, has shape `want`.
inline void optional_shape(const char* op, const char* name, const std::optional<at::Tensor>& t,
                           const std::vector<int64_t>& want) {
  if (!t.has_value()) return;
  floating(op, name, *t);
  shape(op, name, *t, want);
}

inline void positive(const char* op, const char* name, int64_t value) {
  TORCH_CHECK_VALUE(value >= 1, "gptcore.", op, ": ", name, " must be >= 1, got ", value);
}

// Attention: q, k, v of rank `rank` (4 dense, 3 packed) sharing a floating dtype, k and v of one
// shape with a head dim in [1, 256] equal to q's, and sinks (Hq,) when given.
inline void attention_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, const std::optional<at::Tensor>& sinks,
                             int64_t rank) {
  floating(op, "q", q, rank);
  floating(op, "k", k, rank);
  floating(op, "v", v, rank);
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                   "gptcore.", op, ": q, k, v must share a dtype, got ", q.scalar_type(), ", ",
                   k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), "gptcore.", op, ": k and v shapes differ: ",
                    k.sizes(), " vs ", v.sizes());
  const int64_t D = q.size(-1);
  TORCH_CHECK_VALUE(D >= 1 && D <= 256 && k.size(-1) == D, "gptcore.", op,
                    ": head dims must be equal and in [1, 256], got q ", D, ", k ", k.size(-1));
  const int64_t Hq = q.size(1), Hkv = k.size(1);
  TORCH_CHECK_VALUE(Hkv >= 1 && Hq % Hkv == 0, "gptcore.", op, ": k must have Hkv >= 1 heads "
                    "dividing q's ", Hq, ", got ", Hkv);
  optional_shape(op, "sinks", sinks, {Hq});
}

// Attention backward: out and dout shaped like q, lse and dlse like q without D.
inline void attention_grads(const char* op, const at::Tensor& q, const at::Tensor& out,
                            const at::Tensor& dout, const at::Tensor& lse,
                            const at::Tensor& dlse) {
  floating(op, "out", out);
  floating(op, "dout", dout);
  floating(op, "lse", lse);
  floating(op, "dlse", dlse);
  TORCH_CHECK_TYPE(out.scalar_type() == q.scalar_type(), "gptcore.", op,
                   ": out must have q's dtype ", q.scalar_type(), ", got ", out.scalar_type());
  shape(op, "out", out, q.sizes().vec());
  shape(op, "dout", dout, q.sizes().vec());
  auto rows = q.sizes().vec();
  rows.pop_back();
  shape(op, "lse", lse, rows);
  shape(op, "dlse", dlse, rows);
}

// MoE: x (T, H) with H >= 1, indices (T, k) with k >= 1, weights (T, k), and a bank of E >= 1
// experts of intermediate size I >= 1 with biases (E, 2I), (E, H) when given. Expert id ranges
// are checked where the dispatch index is built (build_dispatch).
inline void moe_inputs(const char* op, const at::Tensor& x, const at::Tensor& indices,
                       const at::Tensor& weights, int64_t E, int64_t I,
                       const std::optional<at::Tensor>& gate_up_bias,
                       const std::optional<at::Tensor>& down_bias) {
  floating(op, "x", x, 2);
  integral(op, "indices", indices, 2);
  floating(op, "weights", weights, 2);
  const int64_t T = x.size(0), H = x.size(1);
  positive(op, "hidden size H", H);
  positive(op, "top_k", indices.size(1));
  positive(op, "number of experts E", E);
  positive(op, "intermediate size I", I);
  shape(op, "indices", indices, {T, indices.size(1)});
  shape(op, "weights", weights, indices.sizes().vec());
  optional_shape(op, "gate_up_bias", gate_up_bias, {E, 2 * I});
  optional_shape(op, "down_bias", down_bias, {E, H});
}

// Float expert weights gate_up_proj (E, 2I, H), down_proj (E, H, I) for x (T, H).
inline void expert_weights(const char* op, const at::Tensor& x, const at::Tensor& gate_up,
                           const at::Tensor& down) {
  floating(op, "gate_up_proj", gate_up, 3);
  floating(op, "down_proj", down, 3);
  const int64_t E = gate_up.size(0), I = gate_up.size(1) / 2, H = x.size(-1);
  TORCH_CHECK_VALUE(gate_up.size(1) % 2 == 0 && gate_up.size(2) == H, "gptcore.", op,
                    ": gate_up_proj must be (E, 2I, ", H, "), got ", gate_up.sizes());
  shape(op, "down_proj", down, {E, H, I});
}

}  // namespace gptcore::checks
