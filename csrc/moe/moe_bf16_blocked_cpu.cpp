// bf16 MoE experts on CPUs with AVX512_BF16 for many rows per expert, as blocked GEMMs with the
// tokens as the GEMM's columns: h^T = W x^T. The weights are the A operand, read in place (their
// rows along H are the bf16 pairs vdpbf16ps broadcasts); each expert's gathered x rows are
// packed once per call into the B panels (bf16_kernels.h), and so are the GLU activations, so
// nothing tied to the weights is repacked. Per expert block, fused:
//   pack  : xg rows of e -> XP[e] (H pairs x 16 tokens per panel)
//   stage 1, items (e, I-column tile): h^T (2w x n) = gate/up rows @ XP[e] (vdpbf16ps register
//            blocks, fp32) -> + bias -> GLU (AVX-512, 16 tokens a vector) -> bf16 -> AP[e] (I pairs x 16 tokens)
//   stage 2, items (e, H-row tile): o^T (w x n) = down rows @ AP[e] -> (+ bias) * routing
//            weight -> O slot rows -> combine in slot order (deterministic).
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <memory>

#include "bf16_kernels.h"
#include "cpu_features.h"
#include "moe_bf16.h"
#include "parallel.h"

#if GPTCORE_X86  // the vdpbf16ps kernels exist only on x86 builds
namespace gptcore {
namespace {

// Weight rows per item: 2 x 32 gate/up rows (128 KB at H=1024, in L2 while the token panels
// stream past) and 64 down rows; both threads get items at every expert count.
constexpr int64_t kCols1 = 32;
constexpr int64_t kRows2 = 64;

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

}  // namespace

bool bf16_blocked_experts_apply(const at::Tensor& x, const at::Tensor& gate_up,
                                const at::Tensor& down, int64_t top_k) {
  const bool amx_faster = onednn_bf16_on_amx() &&
                          x.size(0) * top_k >= kBf16AmxMinRows * gate_up.size(0);
  // bf16_gemm_avx512 reads A rows in pairs: H and I even keep every read inside the weights
  return use_avx512_bf16() && !amx_faster && x.scalar_type() == at::kBFloat16 &&
         gate_up.scalar_type() == at::kBFloat16 && down.scalar_type() == at::kBFloat16 &&
         x.size(1) % 2 == 0 && down.size(2) % 2 == 0;
}

at::Tensor bf16_blocked_experts(const at::Tensor& x, const at::Tensor& indices,
                                const at::Tensor& weights, const at::Tensor& gate_up,
                                const at::Tensor& down, const at::Tensor& gate_up_bias,
                                const at::Tensor& down_bias, Activation act, float alpha,
                                float limit) {
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1);
  const int64_t E = gate_up.size(0), I = down.size(2);
  const Dispatch d = build_dispatch(indices, E, "moe_experts");
  const int64_t N = d.offsets[E];
  const at::Tensor xc = x.contiguous(), wf = float_contiguous(weights);
  const float* route_w = wf.data_ptr<float>();
  const float* gub = gate_up_bias.defined() ? gate_up_bias.data_ptr<float>() : nullptr;
  const float* db = down_bias.defined() ? down_bias.data_ptr<float>() : nullptr;
  const uint16_t *xp = bf16_bits(xc), *gu = bf16_bits(gate_up), *dn = bf16_bits(down);
  // packed operands per expert: XP[e] (H x n) and AP[e] (I x n), n = that expert's rows
  std::vector<int64_t> xoff(E + 1, 0), aoff(E + 1, 0);
  int64_t max_n = 0;
  for (int64_t e = 0; e < E; ++e) {
    xoff[e + 1] = xoff[e] + bf16_panel_u32(H, d.count(e));
    aoff[e + 1] = aoff[e] + bf16_panel_u32(I, d.count(e));
    max_n = std::max(max_n, d.count(e));
  }
  const int64_t ldn = round16(max_n);  // fp32 tiles are written for whole 16-token panels
  // Left uninitialised: every value is written below (xg by the gather, XP by the packing, AP
  // by stage 1, O by stage 2). Zero-filling them, serially, was a visible share of the call
  // (docs/cpu-isa.md, "Measurements behind the code").
  const std::unique_ptr<uint16_t[]> xg(new uint16_t[N * H]);
  const std::unique_ptr<uint32_t[]> XP(new uint32_t[xoff[E]]), AP(new uint32_t[aoff[E]]);
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) std::copy_n(xp + d.sorted[q] / k * H, H, &xg[q * H]);
  });
  at::parallel_for(0, E, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e)
      if (d.count(e) > 0)
        bf16_pack_bt_avx512(&xg[d.offsets[e] * H], H, d.count(e), H, &XP[xoff[e]]);
  });
  std::vector<std::pair<int64_t, int64_t>> items1, items2;  // (expert, first column / row)
  for (int64_t e = 0; e < E; ++e) {
    if (d.count(e) == 0) continue;
    for (int64_t c = 0; c < I; c += kCols1) items1.emplace_back(e, c);
    for (int64_t r = 0; r < H; r += kRows2) items2.emplace_back(e, r);
  }
  const bool gpt_oss = act == Activation::kGptOss;
  // scratch: h^T (2w, ldn)
  parallel_items(items1.size(), 2 * kCols1 * ldn, [&](int64_t item, float* scratch) {
    const auto [e, c0] = items1[item];
    const int64_t w = std::min(kCols1, I - c0), n = d.count(e), pairs = I / 2;
    float* ht = scratch;
    const uint32_t* bp = &XP[xoff[e]];
    // rows of h^T: gate c0.. then up c0.. (silu, gelu), or the interleaved pairs (gpt_oss)
    const int64_t rg = gpt_oss ? 2 * c0 : c0, ru = I + c0;
    if (gpt_oss) {
      bf16_weight_gemm_avx512(2 * w, n, H, gu + (e * 2 * I + rg) * H, H, bp, ht, ldn);
    } else {
      bf16_weight_gemm_avx512(w, n, H, gu + (e * 2 * I + rg) * H, H, bp, ht, ldn);
      bf16_weight_gemm_avx512(w, n, H, gu + (e * 2 * I + ru) * H, H, bp, ht + w * ldn, ldn);
    }
    const float* b = gub ? gub + e * 2 * I : nullptr;  // biases indexed like the rows
    const float* bg = b ? b + rg : nullptr;
    const float* bu = b ? b + (gpt_oss ? rg + 1 : ru) : nullptr;
    bf16_glu_pack_avx512(static_cast<int>(act), alpha, limit, ht, ldn, gpt_oss ? 1 : w,
                         gpt_oss ? 2 : 1, bg, bu, w, n, &AP[aoff[e]] + 16 * (c0 / 2), pairs);
  });
  const std::unique_ptr<float[]> O(new float[N * H]);  // slot rows: (down + bias) * weight
  parallel_items(items2.size(), kRows2 * ldn, [&](int64_t item, float* ot) {
    const auto [e, r0] = items2[item];
    const int64_t w = std::min(kRows2, H - r0), first = d.offsets[e], n = d.count(e);
    bf16_weight_gemm_avx512(w, n, I, dn + (e * H + r0) * I, I, &AP[aoff[e]], ot, ldn);
    for (int64_t t = 0; t < n; ++t) {
      const float scale = route_w[d.sorted[first + t]];
      float* o = &O[(first + t) * H + r0];
      for (int64_t j = 0; j < w; ++j) o[j] = (ot[j * ldn + t] + (db ? db[e * H + r0 + j] : 0.0f)) * scale;
    }
  });
  return combine_slots(d, O.get(), T, k, H).to(at::kBFloat16);
}

}  // namespace gptcore
#endif
