// The MoE dispatch index: which (token, slot) pairs each expert serves, built by a counting
// sort in O(T*k). Every backend (C++, CUDA, Triton) reads this one format; docs/moe-index-format.md.
//
// Input: indices (T, k), expert ids in [0, E) or -1 ("no expert"). Slot s = t * k + j names
// token t's j-th choice. With a block size B >= 1 (the row tile of a grouped GEMM):
//   expert_offsets (E + 1,) int64: expert e's segment is sorted_slots[offsets[e], offsets[e+1]);
//       each segment's length is the expert's slot count rounded up to a multiple of B, so
//       offsets[e] % B == 0; offsets[E] is the padded total P.
//   sorted_slots (T*k + E*(B-1),) int64: within a segment, expert e's slots in increasing slot
//       order (stable, so results are deterministic), then padding; padding and everything
//       from P on hold the sentinel T*k.
//   block_expert (ceil(len(sorted_slots) / B),) int64: the expert of block b (rows
//       [b*B, (b+1)*B)) for b < P / B, else -1.
// With B = 1 there is no padding: P is the number of valid slots and the segments are the
// experts' slot lists, which is what the CPU kernels use.
#pragma once
#include <cstdint>

namespace gptcore {

// Length of sorted_slots for T*k slots, E experts and block size B (a bound on P).
inline int64_t moe_index_length(int64_t slots, int64_t num_experts, int64_t block_m) {
  return slots + num_experts * (block_m - 1);
}

// Returns -1 if every index is in [-1, E), else the position of the first bad one.
int64_t moe_index_first_invalid(const int64_t* indices, int64_t slots, int64_t num_experts);

// Fills the three arrays above (sized by moe_index_length) from valid indices.
void moe_index_build(const int64_t* indices, int64_t slots, int64_t num_experts, int64_t block_m,
                     int64_t* sorted_slots, int64_t* expert_offsets, int64_t* block_expert);

}  // namespace gptcore
