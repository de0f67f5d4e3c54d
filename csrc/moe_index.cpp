// The MoE dispatch index (format in moe_index.h) on CPU: a counting sort of slots by expert,
// and the op torch.ops.gptcore.moe_index that exposes it to every backend.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"
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

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> moe_index_cpu(const at::Tensor& indices,
                                                             int64_t num_experts,
                                                             int64_t block_m) {
  checks::integral("moe_index", "indices", indices, 2);
  TORCH_CHECK_VALUE(num_experts >= 1, "gptcore.moe_index: num_experts must be >= 1, got ",
                    num_experts);
  TORCH_CHECK_VALUE(block_m >= 1, "gptcore.moe_index: block_m must be >= 1, got ", block_m);
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  const int64_t slots = idx.numel();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t bad = moe_index_first_invalid(ip, slots, num_experts);
  TORCH_CHECK_VALUE(bad < 0, "gptcore.moe_index: indices must be in [0, ", num_experts,
                    ") or -1, got ", bad < 0 ? 0 : ip[bad]);
  const int64_t length = moe_index_length(slots, num_experts, block_m);
  const auto opts = indices.options().dtype(at::kLong);
  at::Tensor sorted_slots = at::empty({length}, opts);
  at::Tensor offsets = at::empty({num_experts + 1}, opts);
  at::Tensor block_expert = at::empty({(length + block_m - 1) / block_m}, opts);
  moe_index_build(ip, slots, num_experts, block_m, sorted_slots.data_ptr<int64_t>(),
                  offsets.data_ptr<int64_t>(), block_expert.data_ptr<int64_t>());
  return {sorted_slots, offsets, block_expert};
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) { m.impl("moe_index", &moe_index_cpu); }

}  // namespace gptcore
