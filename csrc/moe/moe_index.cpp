// The MoE dispatch index (format in moe_index.h) on CPU: a counting sort of slots by expert,
// built by the experts kernels (csrc/moe_experts_cpu.cpp) for each call.
#include <vector>

#include "moe_index.h"

namespace gptcore {

int64_t moe_index_first_invalid(const int64_t* indices, int64_t slots, int64_t num_experts) {
  for (int64_t s = 0; s < slots; ++s) {
    if (indices[s] < -1 || indices[s] >= num_experts) return s;
  }
  return -1;
}

void moe_index_build(const int64_t* indices, int64_t slots, int64_t num_experts, int64_t block_m,
                     int64_t* sorted_slots, int64_t* expert_offsets, int64_t* block_expert) {
  // Pass 1: histogram. Pass 2: padded prefix sum. Pass 3: stable scatter in slot order.
  std::vector<int64_t> cursor(num_experts, 0);
  for (int64_t s = 0; s < slots; ++s) {
    if (indices[s] >= 0) ++cursor[indices[s]];
  }
  expert_offsets[0] = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t padded = (cursor[e] + block_m - 1) / block_m * block_m;
    expert_offsets[e + 1] = expert_offsets[e] + padded;
    cursor[e] = expert_offsets[e];
  }
  const int64_t length = moe_index_length(slots, num_experts, block_m);
  for (int64_t p = 0; p < length; ++p) sorted_slots[p] = slots;  // the sentinel
  for (int64_t s = 0; s < slots; ++s) {
    if (indices[s] >= 0) sorted_slots[cursor[indices[s]]++] = s;
  }
  const int64_t nblocks = (length + block_m - 1) / block_m;
  for (int64_t b = 0; b < nblocks; ++b) block_expert[b] = -1;
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t p = expert_offsets[e]; p < expert_offsets[e + 1]; p += block_m) {
      block_expert[p / block_m] = e;
    }
  }
}

}  // namespace gptcore
