// Shared pieces of the MoE expert kernels (see moe_experts.h): fp32 weight tiles, GLU
// activations and their derivatives, the per-expert slot lists, and the sgemm wrapper.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>

#include "blas.h"
#include "cpu_features.h"
#include "moe_experts.h"
#include "moe_index.h"
#include "moe_kernels.h"
#include "mxfp4_kernels.h"

namespace gptcore {

Activation parse_activation(const std::string& name) {
  if (name == "silu") return Activation::kSilu;
  if (name == "gelu") return Activation::kGelu;
  TORCH_CHECK_VALUE(name == "gpt_oss", "gptcore.moe_experts: activation must be 'silu', 'gelu' ",
                    "or 'gpt_oss', got '", name, "'");
  return Activation::kGptOss;
}

const float* WeightRows::rows(int64_t r0, int64_t n, float* scratch) const {
  const int64_t count = n * cols;
  switch (kind) {
    case Kind::kF32:
      return static_cast<const float*>(data) + r0 * cols;
    case Kind::kBF16: {
      const auto* src = static_cast<const uint16_t*>(data) + r0 * cols;
#if GPTCORE_X86
      if (use_avx2()) {
        bf16_to_fp32_avx2(src, count, scratch);
        return scratch;
      }
#endif
      const auto* b = reinterpret_cast<const c10::BFloat16*>(src);
      for (int64_t i = 0; i < count; ++i) scratch[i] = static_cast<float>(b[i]);
      return scratch;
    }
    case Kind::kF16: {
      const auto* src = static_cast<const uint16_t*>(data) + r0 * cols;
#if GPTCORE_X86
      if (use_avx2()) {
        fp16_to_fp32_avx2(src, count, scratch);
        return scratch;
      }
#endif
      const auto* h = reinterpret_cast<const c10::Half*>(src);
      for (int64_t i = 0; i < count; ++i) scratch[i] = static_cast<float>(h[i]);
      return scratch;
    }
    case Kind::kMXFP4: {
      const auto* blocks = static_cast<const uint8_t*>(data) + r0 * cols / 2;
      auto row = mxfp4_dequantize_row_portable;
#if GPTCORE_X86
      if (use_avx2()) row = mxfp4_dequantize_row_avx2;
#endif
      row(blocks, scales + r0 * cols / 32, count / 32, scratch);
      return scratch;
    }
  }
  return nullptr;
}

WeightRows float_weight_rows(const at::Tensor& w) {
  WeightRows r{WeightRows::Kind::kF32, w.data_ptr(), nullptr, w.size(-1)};
  if (w.scalar_type() == at::kBFloat16) r.kind = WeightRows::Kind::kBF16;
  else if (w.scalar_type() == at::kHalf) r.kind = WeightRows::Kind::kF16;
  else TORCH_CHECK_TYPE(w.scalar_type() == at::kFloat, "gptcore.moe_experts: expert weights must "
                        "be float32, bfloat16 or float16, got ", w.scalar_type());
  return r;
}

WeightRows mxfp4_weight_rows(const at::Tensor& blocks, const at::Tensor& scales) {
  return {WeightRows::Kind::kMXFP4, blocks.data_ptr(), scales.data_ptr<uint8_t>(),
          2 * blocks.size(-1)};
}

Dispatch build_dispatch(const at::Tensor& indices, int64_t num_experts, const char* op) {
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  const int64_t slots = idx.numel();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t bad = moe_index_first_invalid(ip, slots, num_experts);
  TORCH_CHECK_VALUE(bad < 0, "gptcore.", op, ": indices must be expert ids in [0, ", num_experts,
                    ") or -1, got ", bad < 0 ? 0 : ip[bad]);
  Dispatch d;
  d.sorted.resize(slots);
  d.offsets.resize(num_experts + 1);
  std::vector<int64_t> block_expert(slots);
  moe_index_build(ip, slots, num_experts, 1, d.sorted.data(), d.offsets.data(),
                  block_expert.data());
  d.position.assign(slots, -1);
  for (int64_t p = 0; p < d.offsets[num_experts]; ++p) d.position[d.sorted[p]] = p;
  return d;
}

namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

float gelu_tanh(float g) {
  return 0.5f * g * (1.0f + std::tanh(kGeluC * (g + kGeluA * g * g * g)));
}

}  // namespace

void glu_forward(Activation act, float alpha, float limit, const float* h, int64_t ldh, int64_t n,
                 int64_t w, float* a, int64_t lda) {
  for (int64_t r = 0; r < n; ++r) {
    const float* hr = h + r * ldh;
    float* ar = a + r * lda;
    if (act == Activation::kGptOss) {
      for (int64_t c = 0; c < w; ++c) {
        const float g = std::fmin(hr[2 * c], limit);
        const float u = std::fmax(std::fmin(hr[2 * c + 1], limit), -limit);
        ar[c] = g * sigmoid(alpha * g) * (u + 1.0f);
      }
    } else if (act == Activation::kSilu) {
      for (int64_t c = 0; c < w; ++c) ar[c] = hr[c] * sigmoid(hr[c]) * hr[w + c];
    } else {
      for (int64_t c = 0; c < w; ++c) ar[c] = gelu_tanh(hr[c]) * hr[w + c];
    }
  }
}

void glu_backward(Activation act, float alpha, float limit, const float* h, const float* da,
                  int64_t n, int64_t w, float* dh) {
  for (int64_t r = 0; r < n; ++r) {
    const float* hr = h + r * 2 * w;
    const float* dar = da + r * w;
    float* dhr = dh + r * 2 * w;
    for (int64_t c = 0; c < w; ++c) {
      if (act == Activation::kGptOss) {
        // clamp passes gradient where the input is inside [min, max], bounds included (torch)
        const float graw = hr[2 * c], uraw = hr[2 * c + 1];
        const float g = std::fmin(graw, limit);
        const float u = std::fmax(std::fmin(uraw, limit), -limit);
        const float s = sigmoid(alpha * g);
        const float dg = s * (1.0f + alpha * g * (1.0f - s)) * (u + 1.0f) * dar[c];
        const float du = g * s * dar[c];
        dhr[2 * c] = graw <= limit ? dg : 0.0f;
        dhr[2 * c + 1] = (uraw >= -limit && uraw <= limit) ? du : 0.0f;
      } else if (act == Activation::kSilu) {
        const float g = hr[c], u = hr[w + c], s = sigmoid(g);
        dhr[c] = dar[c] * u * s * (1.0f + g * (1.0f - s));
        dhr[w + c] = dar[c] * g * s;
      } else {
        const float g = hr[c], u = hr[w + c];
        const float t = std::tanh(kGeluC * (g + kGeluA * g * g * g));
        const float dgelu =
            0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * kGeluC * (1.0f + 3.0f * kGeluA * g * g);
        dhr[c] = dar[c] * u * dgelu;
        dhr[w + c] = dar[c] * gelu_tanh(g);
      }
    }
  }
}

void gemm_nt(int64_t n, int64_t m, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
  // Direct BLAS: the decode path makes hundreds of small calls per layer, where at::mm's
  // per-call overhead would show; at::mm only where torch has no BLAS.
  if (blas_available()) {
    // Column-major BLAS sees row-major C^T (m, n) = B (m, K) . A^T (K, n).
    blas_sgemm('T', 'N', m, n, K, B, ldb, A, lda, beta, C, ldc);
    return;
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor a = at::from_blob(const_cast<float*>(A), {n, K}, {lda, 1}, opts);
  const at::Tensor b = at::from_blob(const_cast<float*>(B), {m, K}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {n, m}, {ldc, 1}, opts);
  if (beta == 0.0f) c.copy_(at::mm(a, b.t()));
  else c.mul_(beta).add_(at::mm(a, b.t()));
}

void mxfp4_permute_row(float* row, int64_t K) {
  float block[32];
  for (int64_t b = 0; b < K; b += 32) {
    for (int i = 0; i < 16; ++i) {
      block[i] = row[b + 2 * i];
      block[16 + i] = row[b + 2 * i + 1];
    }
    std::copy_n(block, 32, row + b);
  }
}


at::Tensor optional_float(const std::optional<at::Tensor>& t) {
  return t.has_value() ? float_contiguous(*t) : at::Tensor();
}

at::Tensor combine_slots(const Dispatch& d, const float* O, int64_t T, int64_t k, int64_t H) {
  at::Tensor y = at::empty({T, H}, at::TensorOptions().dtype(at::kFloat));
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* yr = yp + t * H;
      std::fill_n(yr, H, 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t q = d.position[t * k + j];
        if (q < 0) continue;
        const float* orow = O + q * H;
        for (int64_t c = 0; c < H; ++c) yr[c] += orow[c];
      }
    }
  });
  return y;
}

}  // namespace gptcore
