// MoE routing on CUDA, the twin of csrc/route_cpu.cpp: one thread per token, scores recomputed
// from the logits on the fly (no per-thread arrays), top-k by k ordered arg-max passes whose
// order is (score desc, expert asc), so ties go to the lower expert as in gptcore.ref.route.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cuda_launch.h"

#include <string>

namespace gptcore {
namespace {

constexpr int kSoftmax = 0, kTopkSoftmax = 1, kSigmoid = 2;

__device__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// What top-k ranks for expert e (softmax is monotonic in the logit, but ref ranks the
// probabilities, whose rounding can tie distinct logits: rank the same values).
__device__ float choice(const float* logit, const float* bias, int e, int scoring, float mx,
                        float inv_sum) {
  if (scoring == kSoftmax) return expf(logit[e] - mx) * inv_sum;
  if (scoring == kTopkSoftmax) return logit[e];
  return sigmoid(logit[e]) + (bias ? bias[e] : 0.0f);
}

__global__ void route_kernel(const float* logits, const float* bias, int64_t T, int E, int k,
                             int scoring, bool renormalize, float* weights, int64_t* indices) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= T) return;
  const float* logit = logits + t * E;
  float* w = weights + t * k;
  int64_t* idx = indices + t * k;
  float mx = -INFINITY, sum = 0.0f;
  if (scoring == kSoftmax) {
    for (int e = 0; e < E; ++e) mx = fmaxf(mx, logit[e]);
    for (int e = 0; e < E; ++e) sum += expf(logit[e] - mx);
  }
  const float inv_sum = scoring == kSoftmax ? 1.0f / sum : 1.0f;
  float prev_v = INFINITY;
  int prev_e = -1;
  for (int j = 0; j < k; ++j) {  // the best expert ranked after (prev_v, prev_e)
    float best_v = -INFINITY;
    int best_e = -1;
    for (int e = 0; e < E; ++e) {
      const float v = choice(logit, bias, e, scoring, mx, inv_sum);
      const bool after_prev = v < prev_v || (v == prev_v && e > prev_e);
      if (after_prev && (best_e < 0 || v > best_v)) {
        best_v = v;
        best_e = e;
      }
    }
    idx[j] = best_e;
    prev_v = best_v;
    prev_e = best_e;
  }
  float total = 0.0f;
  const float top = logit[idx[0]];
  for (int j = 0; j < k; ++j) {
    const float l = logit[idx[j]];
    w[j] = scoring == kSoftmax ? expf(l - mx) * inv_sum
         : scoring == kSigmoid ? sigmoid(l)
                               : expf(l - top);
    total += w[j];
  }
  if (scoring == kTopkSoftmax || renormalize) {
    for (int j = 0; j < k; ++j) w[j] /= total;
  }
}

std::tuple<at::Tensor, at::Tensor> route_cuda(const at::Tensor& logits, int64_t top_k,
                                              c10::string_view scoring_name, bool renormalize,
                                              const std::optional<at::Tensor>& bias) {
  const std::string name(scoring_name);
  const int scoring = name == "softmax" ? kSoftmax : name == "topk_softmax" ? kTopkSoftmax
                    : name == "sigmoid" ? kSigmoid : -1;
  TORCH_CHECK_VALUE(scoring >= 0, "gptcore.route: unknown scoring '", name, "'");
  TORCH_CHECK_VALUE(logits.dim() == 2 && top_k >= 1 && top_k <= logits.size(1),
                    "gptcore.route: expected logits (T, E) and 1 <= top_k <= E");
  const DeviceScope device(logits);
  const at::Tensor lf = logits.to(at::kFloat).contiguous();
  at::Tensor bf;
  if (bias.has_value()) bf = bias->to(at::kFloat).contiguous();
  const int64_t T = lf.size(0);
  at::Tensor weights = at::empty({T, top_k}, lf.options());
  at::Tensor indices = at::empty({T, top_k}, lf.options().dtype(at::kLong));
  if (T == 0) return {weights, indices};
  constexpr int kThreads = 128;
  const auto blocks = static_cast<unsigned>((T + kThreads - 1) / kThreads);
  route_kernel<<<blocks, kThreads>>>(
      lf.data_ptr<float>(), bf.defined() ? bf.data_ptr<float>() : nullptr, T,
      static_cast<int>(lf.size(1)), static_cast<int>(top_k), scoring, renormalize,
      weights.data_ptr<float>(), indices.data_ptr<int64_t>());
  check_launch("route");
  return {weights, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CUDA, m) { m.impl("route", &route_cuda); }

}  // namespace gptcore
