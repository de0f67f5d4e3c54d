// bf16 MoE experts on CPUs with AVX512_BF16, for small T (a few rows per expert), fused per
// expert block: gathered bf16 rows of x -> gate/up dot products (vdpbf16ps, fp32 accumulation)
// -> bias + GLU in fp32 -> bf16 activations -> down dot products -> bias, routing weight ->
// fp32 slot rows -> deterministic combine in slot order. The bf16 weights are read in place
// (rows along H are already the bf16 pairs vdpbf16ps takes; K-major weights, gpt-oss's layout
// in transformers, through bf16_kmajor_rows_avx512), and so are the biases (fp32 or bf16):
// no fp32 copy, no conversion per call, no library call.
//   stage 1, items (expert, I-column tile): A[rows of e, c0:c0+w] (bf16)
//   stage 2, items (expert, H-column tile): O[rows of e, h0:h0+w] (fp32)
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "bf16_kernels.h"
#include "bf16_kmajor.h"
#include "cpu_features.h"
#include "moe_bf16.h"
#include "parallel.h"

#if GPTCORE_X86  // the vdpbf16ps kernels exist only on x86 builds
namespace gptcore {
namespace {

// Weight rows per tile: 32 columns of I are 64 gate/up rows (128 KB at H=1024), which stay in
// L2 while every block of x rows passes; narrow tiles give both threads work even at T=1.
constexpr int64_t kTileCols = 32;
// K-major weights are strided by their row of 2I or H values: tiles of 128 columns read 256-512
// contiguous bytes of each row (bf16_kmajor_avx512.cpp's strips) instead of 64.
constexpr int64_t kKmajorTileCols = 128;
constexpr int64_t kRowBlock = 64;

// One expert's bf16 weight matrix (N, K), stored row-major or K-major (its transpose).
struct Matrix {
  const uint16_t* data;
  int64_t N, K;
  bool kmajor;

  // out (nx, cols) = x (nx, K) . rows [r0, r0 + cols) of the matrix, transposed.
  void dot(int64_t r0, int64_t cols, const uint16_t* x, int64_t ldx, int64_t nx, float* out,
           int64_t ldo) const {
    if (kmajor) bf16_kmajor_rows_avx512(data + r0, N, cols, x, ldx, nx, K, out, ldo);
    else bf16_dot_rows_avx512(data + r0 * K, K, cols, x, ldx, nx, K, out, ldo, false);
  }
};

// n values of a bias (fp32, bf16 or fp16, contiguous) from index first, as fp32.
void bias_values(const at::Tensor& b, int64_t first, int64_t n, float* dst) {
  switch (b.scalar_type()) {
    case at::kFloat: std::copy_n(b.data_ptr<float>() + first, n, dst); break;
    case at::kBFloat16: std::copy_n(b.data_ptr<at::BFloat16>() + first, n, dst); break;
    default: std::copy_n(b.data_ptr<at::Half>() + first, n, dst); break;
  }
}

}  // namespace

bool bf16_fused_experts_apply(const at::Tensor& x, const at::Tensor& gate_up,
                              const at::Tensor& down, int64_t top_k) {
  const int64_t E = gate_up.size(0);
  return use_avx512_bf16() && x.scalar_type() == at::kBFloat16 &&
         gate_up.scalar_type() == at::kBFloat16 && down.scalar_type() == at::kBFloat16 &&
         E > 0 && (x.size(0) * top_k <= kBf16FusedMaxRows * E || x.size(1) % 2 != 0 ||
                   down.size(2) % 2 != 0);  // odd H or I: the blocked GEMMs read even K
}

at::Tensor bf16_fused_experts(const at::Tensor& x, const at::Tensor& indices,
                              const at::Tensor& weights, const at::Tensor& gate_up,
                              const at::Tensor& down, const at::Tensor& gate_up_bias,
                              const at::Tensor& down_bias, Activation act, float alpha,
                              float limit, bool gate_up_kmajor, bool down_kmajor) {
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1);
  const int64_t E = gate_up.size(0), I = down.size(2);
  const Dispatch d = build_dispatch(indices, E, "moe_experts");
  const int64_t N = d.offsets[E];
  const at::Tensor xc = x.contiguous(), wf = float_contiguous(weights);
  const at::Tensor gub = gate_up_bias.defined() ? gate_up_bias.contiguous() : gate_up_bias;
  const at::Tensor db = down_bias.defined() ? down_bias.contiguous() : down_bias;
  const float* route_w = wf.data_ptr<float>();
  const uint16_t *xp = bf16_bits(xc), *gu = bf16_bits(gate_up), *dn = bf16_bits(down);
  std::vector<uint16_t> xg(N * H), A(N * I);  // gathered x rows, activations (bf16 bits)
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) std::copy_n(xp + d.sorted[q] / k * H, H, &xg[q * H]);
  });
  const int64_t tile1 = gate_up_kmajor ? kKmajorTileCols : kTileCols;
  const int64_t tile2 = down_kmajor ? kKmajorTileCols : kTileCols;
  std::vector<std::pair<int64_t, int64_t>> items1, items2;  // (expert, first column)
  for (int64_t e = 0; e < E; ++e) {
    if (d.count(e) == 0) continue;
    for (int64_t c = 0; c < I; c += tile1) items1.emplace_back(e, c);
    for (int64_t c = 0; c < H; c += tile2) items2.emplace_back(e, c);
  }
  const bool gpt_oss = act == Activation::kGptOss;
  parallel_items(items1.size(), kRowBlock * 3 * tile1 + 2 * tile1,
                 [&](int64_t item, float* scratch) {
    const auto [e, c0] = items1[item];
    const int64_t w = std::min(tile1, I - c0), first = d.offsets[e], n = d.count(e);
    const Matrix m{gu + e * 2 * I * H, 2 * I, H, gate_up_kmajor};
    float* h = scratch;                     // (rows, 2w) gate | up, or interleaved (gpt_oss)
    float* a = scratch + kRowBlock * 2 * w; // (rows, w)
    float* b = a + kRowBlock * w;           // (2w) the tile's biases, in h's column order
    if (gub.defined()) {
      if (gpt_oss) {
        bias_values(gub, e * 2 * I + 2 * c0, 2 * w, b);
      } else {
        bias_values(gub, e * 2 * I + c0, w, b);
        bias_values(gub, e * 2 * I + I + c0, w, b + w);
      }
    }
    for (int64_t r = 0; r < n; r += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, n - r);
      const uint16_t* xr = &xg[(first + r) * H];
      if (gpt_oss) {
        m.dot(2 * c0, 2 * w, xr, H, rows, h, 2 * w);
      } else {
        m.dot(c0, w, xr, H, rows, h, 2 * w);
        m.dot(I + c0, w, xr, H, rows, h + w, 2 * w);
      }
      if (gub.defined())
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t c = 0; c < 2 * w; ++c) h[i * 2 * w + c] += b[c];
      glu_forward(act, alpha, limit, h, 2 * w, rows, w, a, w);
      for (int64_t i = 0; i < rows; ++i)
        fp32_to_bf16_avx512(a + i * w, w, &A[(first + r + i) * I + c0]);
    }
  });
  std::vector<float> O(N * H);  // slot rows: (down + bias) * routing weight
  parallel_items(items2.size(), [&](int64_t item) {
    const auto [e, h0] = items2[item];
    const int64_t w = std::min(tile2, H - h0), first = d.offsets[e], n = d.count(e);
    float* o = &O[first * H + h0];
    const Matrix m{dn + e * H * I, H, I, down_kmajor};
    m.dot(h0, w, &A[first * I], I, n, o, H);
    float b[kKmajorTileCols] = {};
    if (db.defined()) bias_values(db, e * H + h0, w, b);
    for (int64_t i = 0; i < n; ++i) {
      const float scale = route_w[d.sorted[first + i]];
      for (int64_t c = 0; c < w; ++c) o[i * H + c] = (o[i * H + c] + b[c]) * scale;
    }
  });
  return combine_slots(d, O.data(), T, k, H).to(at::kBFloat16);
}

}  // namespace gptcore
#endif
