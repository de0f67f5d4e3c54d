// bf16 attention forward tiles through AVX512_BF16 (csrc/attention_bf16_cpu.cpp).
#pragma once
#include <c10/util/BFloat16.h>

#include "attention_common.h"

namespace gptcore::attn {

constexpr int64_t kBf16TileKeys = 128;

// The piece (sequence n, kv head h, query rows [i0, i1), keys [k0, k1)) of a bf16 problem, as
// attention_cpu.cpp's run_item: o (M x Dp) normalised over the piece's keys, lse per row.
void run_item_bf16(const Problem& pb, int64_t n, int64_t h, int64_t i0, int64_t i1, int64_t k0,
                   int64_t k1, const c10::BFloat16* q, const c10::BFloat16* k,
                   const c10::BFloat16* v, float* o, float* lse_out);

}  // namespace gptcore::attn
