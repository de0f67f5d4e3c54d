// bf16 attention handed to torch's CPU flash attention where oneDNN runs it on AMX tiles
// (attention_onednn_cpu.cpp): there its bf16 products outrun our vdpbf16ps tiles several times
// over (docs/cpu-isa.md). Only the masks it computes exactly as ours take this path.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace gptcore::attn {

// Whether a dense (B, H, S, D) call goes to torch's flash attention: bf16 at the AVX512_BF16
// level on a CPU where oneDNN's bf16 runs on AMX, at least kOnednnMinRows query rows, no sinks,
// no softcap, no window, and a mask SDPA's top-left causal flag expresses: none, or causal with
// Sq == Sk (where top-left and our bottom-right alignment agree).
bool onednn_attention_applies(const at::Tensor& q, const at::Tensor& k,
                              const std::optional<at::Tensor>& sinks, int64_t left, int64_t right,
                              double softcap);

// (out (B, Hq, Sq, D) contiguous, lse (B, Hq, Sq) fp32): the same outputs as our forward. GQA
// by expanding k and v to Hq heads.
std::tuple<at::Tensor, at::Tensor> onednn_attention_fwd(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, double scale,
                                                        bool causal);

// (dq, dk, dv) from the forward's out and lse; dk, dv summed back over each group's heads.
std::tuple<at::Tensor, at::Tensor, at::Tensor> onednn_attention_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, double scale, bool causal);

}  // namespace gptcore::attn
