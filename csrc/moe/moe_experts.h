// Pieces shared by the MoE expert kernels (forward moe_experts_cpu.cpp, backward
// moe_experts_bwd_cpu.cpp): weight rows as fp32 tiles, the GLU activations, the dispatch index.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu_util.h"

namespace gptcore {

enum class Activation { kSilu, kGelu, kGptOss };
Activation parse_activation(const std::string& name);

// A weight matrix seen as rows of `cols` values: (E * R, cols) for expert weights (E, R, cols).
// `rows` returns rows [r0, r0 + n) as fp32: a pointer into the tensor for fp32 weights, else
// they are converted (bf16 / fp16) or dequantised (MXFP4) into `scratch` (n * cols floats).
struct WeightRows {
  enum class Kind { kF32, kBF16, kF16, kMXFP4 } kind;
  const void* data;        // the weights, or the MXFP4 blocks (cols / 2 bytes per row)
  const uint8_t* scales;   // MXFP4 scales (cols / 32 per row), else null
  int64_t cols;
  const float* rows(int64_t r0, int64_t n, float* scratch) const;
  // K-major storage (moe_experts_kmajor.cpp): the rows are the reduction dimension. Rows
  // [r0, r0 + n) x columns [c0, c0 + w) as fp32 with row stride *ld: a pointer into the tensor
  // for fp32 (*ld = cols), else converted into `scratch` (n * w floats, *ld = w).
  const float* columns(int64_t r0, int64_t n, int64_t c0, int64_t w, float* scratch,
                       int64_t* ld) const;
  bool copies() const { return kind != Kind::kF32; }
};
WeightRows float_weight_rows(const at::Tensor& w);  // w contiguous fp32 / bf16 / fp16
WeightRows mxfp4_weight_rows(const at::Tensor& blocks, const at::Tensor& scales);

// Slot lists per expert (moe_index.h with block size 1): expert e's slots are
// sorted[offsets[e], offsets[e+1]); position[s] is where slot s sits in `sorted`, or -1.
struct Dispatch {
  std::vector<int64_t> sorted, offsets, position;
  int64_t count(int64_t e) const { return offsets[e + 1] - offsets[e]; }
};
Dispatch build_dispatch(const at::Tensor& indices, int64_t num_experts, const char* op);

// y (T, H) fp32: each token's k slot rows of O (row position[s], H wide) summed in slot order
// (deterministic); slots with no expert add nothing.
at::Tensor combine_slots(const Dispatch& d, const float* O, int64_t T, int64_t k, int64_t H);

// h (n, 2w) pre-activations, row stride ldh: gate | up halves (silu, gelu) or interleaved
// gate, up pairs (gpt_oss) -> a (n, w), row stride lda.
void glu_forward(Activation act, float alpha, float limit, const float* h, int64_t ldh, int64_t n,
                 int64_t w, float* a, int64_t lda);
// da (n, w) -> dh (n, 2w) in h's layout, recomputed from h. dh may alias h.
void glu_backward(Activation act, float alpha, float limit, const float* h, const float* da,
                  int64_t n, int64_t w, float* dh);

// C (n, m; row stride ldc) = A (n, K; lda) @ B (m, K; ldb)^T + beta * C, one thread (MKL sgemm
// when called inside a parallel region).
void gemm_nt(int64_t n, int64_t m, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc);

// C (n, m; ldc) = A (n, K; lda) @ B (K, m; ldb) + beta * C: gemm_nt for K-major weights.
void gemm_nn(int64_t n, int64_t m, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc);

// Expert weights (E, N, K) given as the transpose of a contiguous (E, K, N) tensor (how
// transformers stores gpt-oss's experts). The kernels read that layout in place.
bool kmajor_weights(const at::Tensor& w);

// Reorders each block of 32 values as the MXFP4 nibbles are stored: 16 even elements, then 16
// odd ones (the activation layout the fused MXFP4 kernels expect). K % 32 == 0; in place is fine.
void mxfp4_permute_row(float* row, int64_t K);

at::Tensor optional_float(const std::optional<at::Tensor>& t);

}  // namespace gptcore
