// bf16 attention through torch's CPU flash attention (oneDNN on AMX); see attention_onednn.h.
#include "attention_onednn.h"

#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu_backward.h>

#include "cpu_features.h"

namespace gptcore::attn {
namespace {

// Below this many query rows (decode, short prompts) our kernels stream K/V themselves.
constexpr int64_t kOnednnMinRows = 16;

// k or v (B, Hkv, S, D) as (B, Hq, S, D): each kv head repeated for its group of q heads.
at::Tensor expand_heads(const at::Tensor& t, int64_t Hq) {
  const int64_t B = t.size(0), Hkv = t.size(1), S = t.size(2), D = t.size(3);
  if (Hkv == Hq) return t;
  return t.unsqueeze(2).expand({B, Hkv, Hq / Hkv, S, D}).reshape({B, Hq, S, D});
}

// The gradient of an expanded k or v back to (B, Hkv, S, D).
at::Tensor sum_heads(const at::Tensor& g, int64_t Hkv) {
  const int64_t B = g.size(0), Hq = g.size(1), S = g.size(2), D = g.size(3);
  if (Hkv == Hq) return g.contiguous();
  return g.view({B, Hkv, Hq / Hkv, S, D}).sum(2);
}

}  // namespace

bool onednn_attention_applies(const at::Tensor& q, const at::Tensor& k,
                              const std::optional<at::Tensor>& sinks, int64_t left, int64_t right,
                              double softcap) {
  if (q.scalar_type() != at::kBFloat16 || q.dim() != 4 || !use_avx512_bf16() ||
      !onednn_bf16_on_amx())
    return false;
  const int64_t Sq = q.size(2), Sk = k.size(2);
  const bool mask_ok = right < 0 || (right == 0 && Sq == Sk);
  return !sinks.has_value() && softcap <= 0 && left < 0 && mask_ok && Sq >= kOnednnMinRows &&
         Sk > 0 && q.size(0) > 0 && q.size(1) > 0 && q.size(3) > 0;
}

std::tuple<at::Tensor, at::Tensor> onednn_attention_fwd(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, double scale,
                                                        bool causal) {
  const int64_t Hq = q.size(1);
  auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(
      q, expand_heads(k, Hq), expand_heads(v, Hq), 0.0, causal, std::nullopt, scale);
  return {out.contiguous(), lse.contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> onednn_attention_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, double scale, bool causal) {
  const int64_t Hq = q.size(1), Hkv = k.size(1);
  auto [dq, dk, dv] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
      dout.to(q.scalar_type()), q, expand_heads(k, Hq), expand_heads(v, Hq), out,
      lse.to(at::kFloat), 0.0, causal, std::nullopt, scale);
  return {dq.contiguous(), sum_heads(dk, Hkv), sum_heads(dv, Hkv)};
}

}  // namespace gptcore::attn
