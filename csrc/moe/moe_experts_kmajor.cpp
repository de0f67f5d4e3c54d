// K-major expert weights, read in place: transformers stores gpt-oss's experts as
// gate_up_proj (E, H, 2I) and down_proj (E, I, H), the transposes of gptcore's (E, 2I, H) and
// (E, H, I). Copying them to gptcore's layout on every call cost most of a gpt-oss decode step
// (docs/cpu-isa.md, "Measurements behind the code"); instead the column tiles take a
// strided panel of the K-major storage and multiply it with a non-transposed GEMM.
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "blas.h"
#include "cpu_features.h"
#include "moe_experts.h"
#include "moe_kernels.h"

namespace gptcore {

bool kmajor_weights(const at::Tensor& w) {
  return w.dim() == 3 && !w.is_contiguous() && w.transpose(1, 2).is_contiguous();
}

const float* WeightRows::columns(int64_t r0, int64_t n, int64_t c0, int64_t w, float* scratch,
                                 int64_t* ld) const {
  TORCH_CHECK(kind != Kind::kMXFP4, "gptcore.moe_experts: MXFP4 weights are never K-major");
  if (kind == Kind::kF32) {
    *ld = cols;
    return static_cast<const float*>(data) + r0 * cols + c0;
  }
  *ld = w;
  const auto* src = static_cast<const uint16_t*>(data) + r0 * cols + c0;
  for (int64_t r = 0; r < n; ++r) {
    const uint16_t* in = src + r * cols;
    float* out = scratch + r * w;
#if GPTCORE_X86
    if (use_avx2()) {
      (kind == Kind::kBF16 ? bf16_to_fp32_avx2 : fp16_to_fp32_avx2)(in, w, out);
      continue;
    }
#endif
    if (kind == Kind::kBF16) {
      const auto* b = reinterpret_cast<const c10::BFloat16*>(in);
      for (int64_t c = 0; c < w; ++c) out[c] = static_cast<float>(b[c]);
    } else {
      const auto* h = reinterpret_cast<const c10::Half*>(in);
      for (int64_t c = 0; c < w; ++c) out[c] = static_cast<float>(h[c]);
    }
  }
  return scratch;
}

void gemm_nn(int64_t n, int64_t m, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
  if (blas_available()) {
    // Column-major BLAS sees row-major C^T (m, n) = B^T (m, K) . A^T (K, n), B^T column-major.
    blas_sgemm('N', 'N', m, n, K, B, ldb, A, lda, beta, C, ldc);
    return;
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor a = at::from_blob(const_cast<float*>(A), {n, K}, {lda, 1}, opts);
  const at::Tensor b = at::from_blob(const_cast<float*>(B), {K, m}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {n, m}, {ldc, 1}, opts);
  if (beta == 0.0f) c.copy_(at::mm(a, b));
  else c.mul_(beta).add_(at::mm(a, b));
}

}  // namespace gptcore
