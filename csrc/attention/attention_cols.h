// The column-layout attention forward piece (csrc/attention_cols_cpu.cpp), run on AVX-512 and
// AVX2 for pieces of at least one vector of query rows; smaller ones (decode) take run_item's
// row kernels.
#pragma once
#include "attention_common.h"

namespace gptcore::attn {

// The column-layout kernels of the active ISA level (kColsAvx512 or kColsAvx2), or nullptr
// where there are none (portable level, non-x86 builds).
const ColsKernels* cols_kernels();

// The piece (sequence n, kv head h, query rows [i0, i1), keys [k0, k1)), as attention_cpu.cpp's
// run_item: o (M x Dp) normalised over the piece's keys, lse per row. K and V tiles come from
// `packed` when given, else from k and v (read in place when fp32, else converted per tile).
template <typename T>
void run_item_cols(const ColsKernels& ker, const Problem& pb, int64_t n, int64_t h, int64_t i0,
                   int64_t i1, int64_t k0, int64_t k1, const T* q, const T* k, const T* v,
                   const PackedKV* packed, float* o_out, float* lse_out);

}  // namespace gptcore::attn
