// bf16 attention forward tiles on CPUs with AVX512_BF16: the flash-attention loop of
// attention_cpu.cpp's run_item with both GEMMs as vdpbf16ps (bf16 inputs, fp32 accumulation)
// and no fp32 copy of Q, K or V. Per 128-key tile:
//   K tile -> pair panels (bf16_pack_bt), S = scale * Q K^T          (M x nk, fp32)
//   mask, softcap, online softmax in fp32 (the AVX2 row kernels), P rounded to bf16
//   V tile -> pair panels (bf16_pack_b),  O = alpha * O + P V        (M x Dp, fp32)
// P's rounding to bf16 is the one SDPA's and FlashAttention's bf16 kernels make too.
// Why: these tiles beat both converting to fp32 for MKL sgemm tiles and SDPA's bf16 path, at
// D128 and D80 (docs/cpu-isa.md, "Measurements behind the code").
#include <c10/util/BFloat16.h>

#include "attention_bf16.h"
#include "bf16_kernels.h"

#if GPTCORE_X86  // the vdpbf16ps kernels exist only on x86 builds
namespace gptcore::attn {

void run_item_bf16(const Problem& pb, int64_t n, int64_t h, int64_t i0, int64_t i1, int64_t k0,
                   int64_t k1, const c10::BFloat16* q, const c10::BFloat16* k,
                   const c10::BFloat16* v, float* o, float* lse_out) {
  const int64_t D = pb.D, Dp = pb.Dp, bq = i1 - i0, M = pb.G * bq;
  const AttentionKernels& ker = kernels();
  const Layout &ql = pb.q_in, &kvl = pb.kv_in;
  const int64_t shift = pb.len_k[n] - pb.len_q[n];  // position of row i is i + shift
  constexpr int64_t BK = kBf16TileKeys;
  const auto* qb = reinterpret_cast<const uint16_t*>(q);
  const auto* kb = reinterpret_cast<const uint16_t*>(k);
  const auto* vb = reinterpret_cast<const uint16_t*>(v);
  thread_local std::vector<uint16_t> qs, p;
  thread_local std::vector<uint32_t> kp, vp;
  thread_local std::vector<float> s;
  qs.assign(M * Dp, 0);  // (M, Dp) bf16 rows, zero past D
  p.assign(M * BK, 0);   // (M, BK) bf16 probabilities, zero past each tile's keys
  kp.resize(bf16_panel_u32(D, BK));
  vp.resize(bf16_panel_u32(BK, Dp));
  s.resize(M * BK);
  std::vector<float> m(M, -INFINITY), l(M, 0.0f);
  std::fill(o, o + M * Dp, 0.0f);
  for (int64_t g = 0; g < pb.G; ++g)
    for (int64_t i = 0; i < bq; ++i)
      std::copy_n(qb + ql.at(n, h * pb.G + g, i0 + i), D, &qs[(g * bq + i) * Dp]);
  const int64_t p0 = i0 + shift, p1 = i1 + shift;
  for (int64_t j0 = k0; j0 < k1; j0 += BK) {
    const int64_t nk = std::min(BK, k1 - j0);
    bf16_pack_bt_avx512(kb + kvl.at(n, h, j0), kvl.row, nk, D, kp.data());
    bf16_pack_b_avx512(vb + kvl.at(n, h, j0), kvl.row, nk, D, vp.data());
    bf16_gemm_avx512(M, nk, D, qs.data(), Dp, kp.data(), pb.scale, s.data(), BK, false);
    if (pb.softcap > 0) apply_softcap(s.data(), BK, M, nk, pb.softcap);
    const bool masked = !pb.band.all_visible(p0, p1, j0, j0 + nk);
    for (int64_t r = 0; r < M; ++r) {
      float* row = s.data() + r * BK;
      if (masked) pb.band.mask_row(row, p0 + r % bq, j0, nk);
      const float m_new = std::max(m[r], ker.row_max(row, nk));
      if (m_new == -INFINITY) {  // nothing visible yet: contributes zeros
        std::fill(row, row + nk, 0.0f);
      } else {
        const float alpha = std::exp(m[r] - m_new);
        const float sum = ker.exp_row(row, nk, m_new);
        if (alpha != 1.0f)
          for (int64_t c = 0; c < Dp; ++c) o[r * Dp + c] *= alpha;
        l[r] = l[r] * alpha + sum;
        m[r] = m_new;
      }
      fp32_to_bf16_avx512(row, nk, &p[r * BK]);
      if (nk % 2) p[r * BK + nk] = 0;  // the pair partner of the last key
    }
    bf16_gemm_avx512(M, D, nk, p.data(), BK, vp.data(), 1.0f, o, Dp, true);
  }
  for (int64_t r = 0; r < M; ++r) {
    const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
    for (int64_t c = 0; c < Dp; ++c) o[r * Dp + c] *= inv;
    lse_out[r] = l[r] > 0 ? m[r] + std::log(l[r]) : -INFINITY;
  }
}

}  // namespace gptcore::attn
#endif
