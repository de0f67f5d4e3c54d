// MoE routing on CPU: logits (T, E) -> top-k weights and expert ids in one pass per token
// (softmax / topk_softmax / sigmoid + selection bias, optional renormalisation), and its backward.
// Selection equals a stable descending sort (gptcore.ref.route): ties go to the lower expert.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "checks.h"
#include "cpu_features.h"
#include "cpu_util.h"
#include "route_kernels.h"

namespace gptcore {
namespace {

enum class Scoring { kSoftmax, kTopkSoftmax, kSigmoid };

Scoring parse_scoring(const std::string& s) {
  if (s == "softmax") return Scoring::kSoftmax;
  if (s == "topk_softmax") return Scoring::kTopkSoftmax;
  TORCH_CHECK_VALUE(s == "sigmoid", "gptcore.route: scoring must be 'softmax', 'topk_softmax' or ",
                    "'sigmoid', got '", s, "'");
  return Scoring::kSigmoid;
}

// Top-k of choice[0, E) into idx[0, k), best first. An element enters only if strictly
// better than the ones kept, so among equal values the lower index stays ahead.
void select_top_k(const float* choice, int64_t E, int64_t k, int64_t* idx) {
  int64_t kept = 0;
  for (int64_t e = 0; e < E; ++e) {
    const float v = choice[e];
    if (kept == k && !(v > choice[idx[k - 1]])) continue;
    int64_t pos = kept < k ? kept++ : k - 1;
    while (pos > 0 && v > choice[idx[pos - 1]]) {
      idx[pos] = idx[pos - 1];
      --pos;
    }
    idx[pos] = e;
  }
}

// From this many experts the AVX-512 selection rounds beat the scalar insertion
// (docs/cpu-isa.md, "Measurements behind the code").
constexpr int64_t kVectorTopKFrom = 16;

// select_top_k, with the AVX-512 rounds where they apply (same result, see route_kernels.h).
void choose_top_k(const float* choice, int64_t E, int64_t k, int64_t* idx, uint16_t* taken) {
#if GPTCORE_X86
  if (use_avx512() && E >= kVectorTopKFrom && top_k_avx512(choice, E, k, idx, taken)) return;
#endif
  select_top_k(choice, E, k, idx);
}

// probs[e] = softmax(row)[e] (fp32, max-subtracted).
void softmax_row(const float* row, int64_t E, float* probs) {
#if GPTCORE_X86
  if (use_avx512()) return softmax_row_avx512(row, E, probs);
#endif
  float mx = -INFINITY;
  for (int64_t e = 0; e < E; ++e) mx = std::fmax(mx, row[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < E; ++e) sum += probs[e] = std::exp(row[e] - mx);
  for (int64_t e = 0; e < E; ++e) probs[e] /= sum;
}


// score[e]: softmax probability or sigmoid of logit e (unused for topk_softmax).
// choice: what top-k ranks (score, logit, or score + bias). `choice_buf` is E-float scratch.
const float* score_row(const float* logit, const float* bias, int64_t E, Scoring scoring,
                       float* score, float* choice_buf) {
  if (scoring == Scoring::kSoftmax) {
    softmax_row(logit, E, score);
    return score;
  }
  if (scoring == Scoring::kTopkSoftmax) return logit;
#if GPTCORE_X86
  if (use_avx512()) {
    sigmoid_row_avx512(logit, bias, E, score, choice_buf);
    return choice_buf;
  }
#endif
  for (int64_t e = 0; e < E; ++e) {
    score[e] = sigmoid(logit[e]);
    choice_buf[e] = bias ? score[e] + bias[e] : score[e];
  }
  return choice_buf;
}

// Routing weights w[k] of the chosen experts idx[k].
void chosen_weights(const float* logit, const float* score, const int64_t* idx, int64_t k,
                    Scoring scoring, bool renormalize, float* w) {
  if (scoring == Scoring::kTopkSoftmax) {  // softmax over the k chosen logits
    float mx = -INFINITY;
    for (int64_t j = 0; j < k; ++j) mx = std::fmax(mx, logit[idx[j]]);
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += w[j] = std::exp(logit[idx[j]] - mx);
    for (int64_t j = 0; j < k; ++j) w[j] /= sum;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < k; ++j) sum += w[j] = score[idx[j]];
  if (renormalize) {
    for (int64_t j = 0; j < k; ++j) w[j] /= sum;
  }
}


std::tuple<at::Tensor, at::Tensor> route_cpu(const at::Tensor& logits, int64_t top_k,
                                             c10::string_view scoring_name, bool renormalize,
                                             const std::optional<at::Tensor>& bias) {
  const Scoring scoring = parse_scoring(std::string(scoring_name));
  checks::floating("route", "logits", logits, 2);
  const int64_t T = logits.size(0), E = logits.size(1);
  checks::positive("route", "number of experts E", E);
  TORCH_CHECK_VALUE(top_k >= 1 && top_k <= E, "gptcore.route: top_k must be in [1, ", E, "], got ",
                    top_k);
  checks::optional_shape("route", "bias", bias, {E});
  const at::Tensor lf = float_contiguous(logits);
  at::Tensor bf;
  if (bias.has_value()) bf = float_contiguous(*bias);
  at::Tensor weights = at::empty({T, top_k}, logits.options().dtype(at::kFloat));
  at::Tensor indices = at::empty({T, top_k}, logits.options().dtype(at::kLong));
  const float* lp = lf.data_ptr<float>();
  const float* bp = bf.defined() ? bf.data_ptr<float>() : nullptr;
  float* wp = weights.data_ptr<float>();
  int64_t* ip = indices.data_ptr<int64_t>();
  at::parallel_for(0, T, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> score(E), choice(E);
    std::vector<uint16_t> taken((E + 15) / 16);
    for (int64_t t = begin; t < end; ++t) {
      const float* logit = lp + t * E;
      choose_top_k(score_row(logit, bp, E, scoring, score.data(), choice.data()), E, top_k,
                   ip + t * top_k, taken.data());
      chosen_weights(logit, score.data(), ip + t * top_k, top_k, scoring, renormalize,
                     wp + t * top_k);
    }
  });
  return {weights, indices};
}

// dlogits for one token, given the routing weights w (recomputed) and their gradient dw.
//   w = softmax over the chosen logits (topk_softmax, or softmax + renormalize):
//       dl[i_j] = w_j (dw_j - <dw, w>)
//   w = p[i_j], p = softmax(all logits): dl = p * (g - <g, p>), g = dw scattered to experts
//   w = s[i_j] (/ S): ds_j = (dw_j - <dw, w>) / S with renormalisation, else dw_j;
//       dl[i_j] = ds_j * s_j (1 - s_j)
void route_bwd_row(const float* dw, const float* logit, const float* bias, const int64_t* idx,
                   int64_t E, int64_t k, Scoring scoring, bool renormalize, float* score,
                   float* choice, float* w, float* dl) {
  score_row(logit, bias, E, scoring, score, choice);
  chosen_weights(logit, score, idx, k, scoring, renormalize, w);
  for (int64_t e = 0; e < E; ++e) dl[e] = 0.0f;
  float dot = 0.0f;
  for (int64_t j = 0; j < k; ++j) dot += dw[j] * w[j];
  if (scoring == Scoring::kTopkSoftmax || (scoring == Scoring::kSoftmax && renormalize)) {
    for (int64_t j = 0; j < k; ++j) dl[idx[j]] += w[j] * (dw[j] - dot);
  } else if (scoring == Scoring::kSoftmax) {
    for (int64_t j = 0; j < k; ++j) dl[idx[j]] += dw[j];  // g
#if GPTCORE_X86
    if (use_avx512()) return softmax_grad_row_avx512(score, dl, E);
#endif
    float gp = 0.0f;
    for (int64_t e = 0; e < E; ++e) gp += dl[e] * score[e];
    for (int64_t e = 0; e < E; ++e) dl[e] = score[e] * (dl[e] - gp);
  } else {
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += score[idx[j]];
    for (int64_t j = 0; j < k; ++j) {
      const float s = score[idx[j]];
      const float ds = renormalize ? (dw[j] - dot) / sum : dw[j];
      dl[idx[j]] += ds * s * (1.0f - s);
    }
  }
}

at::Tensor route_bwd_cpu(const at::Tensor& dweights, const at::Tensor& logits,
                         const at::Tensor& indices, c10::string_view scoring_name, bool renormalize,
                         const std::optional<at::Tensor>& bias) {
  const Scoring scoring = parse_scoring(std::string(scoring_name));
  checks::floating("route_bwd", "logits", logits, 2);
  checks::integral("route_bwd", "indices", indices, 2);
  checks::floating("route_bwd", "dweights", dweights, 2);
  const int64_t T = logits.size(0), E = logits.size(1), k = indices.size(1);
  checks::positive("route_bwd", "number of experts E", E);
  checks::shape("route_bwd", "indices", indices, {T, k});
  checks::shape("route_bwd", "dweights", dweights, {T, k});
  checks::optional_shape("route_bwd", "bias", bias, {E});
  const at::Tensor lf = float_contiguous(logits), dwf = float_contiguous(dweights);
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  const int64_t* ids = idx.data_ptr<int64_t>();
  for (int64_t s = 0; s < idx.numel(); ++s)  // the backward writes dlogits[t, indices[t, j]]
    TORCH_CHECK_VALUE(ids[s] >= 0 && ids[s] < E, "gptcore.route_bwd: indices must be in [0, ", E,
                      "), got ", ids[s]);
  at::Tensor bf;
  if (bias.has_value()) bf = float_contiguous(*bias);
  at::Tensor dlogits = at::empty({T, E}, logits.options().dtype(at::kFloat));
  const float* lp = lf.data_ptr<float>();
  const float* dwp = dwf.data_ptr<float>();
  const float* bp = bf.defined() ? bf.data_ptr<float>() : nullptr;
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* dp = dlogits.data_ptr<float>();
  at::parallel_for(0, T, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> score(E), choice(E), w(k);
    for (int64_t t = begin; t < end; ++t) {
      route_bwd_row(dwp + t * k, lp + t * E, bp, ip + t * k, E, k, scoring, renormalize,
                    score.data(), choice.data(), w.data(), dp + t * E);
    }
  });
  return dlogits.to(logits.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("route", &route_cpu);
  m.impl("route_bwd", &route_bwd_cpu);
}

}  // namespace gptcore
