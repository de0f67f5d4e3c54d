// The MoE dispatch index (csrc/moe_index.h, docs/moe-index-format.md) on CUDA, the twin of
// csrc/moe_index.cpp: per-expert counts, a padded prefix sum, then one thread per expert writes
// its slots in increasing order (stable and deterministic, no atomics). O(T*k*E / threads) work:
// small E, as routing has.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cuda_launch.h"

namespace gptcore {
namespace {

__global__ void count_kernel(const int64_t* indices, int64_t slots, int64_t E, int64_t* counts) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= E) return;
  int64_t n = 0;
  for (int64_t s = 0; s < slots; ++s) n += indices[s] == e;
  counts[e] = n;
}

// offsets (E+1) from counts, each rounded up to a multiple of block_m (one thread: E is small).
__global__ void offsets_kernel(const int64_t* counts, int64_t E, int64_t block_m,
                               int64_t* offsets) {
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e)
    offsets[e + 1] = offsets[e] + (counts[e] + block_m - 1) / block_m * block_m;
}

__global__ void fill_kernel(int64_t* data, int64_t n, int64_t value) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) data[i] = value;
}

__global__ void scatter_kernel(const int64_t* indices, int64_t slots, int64_t E,
                               const int64_t* offsets, int64_t* sorted_slots) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= E) return;
  int64_t cursor = offsets[e];
  for (int64_t s = 0; s < slots; ++s) {
    if (indices[s] == e) sorted_slots[cursor++] = s;
  }
}

__global__ void block_expert_kernel(const int64_t* offsets, int64_t E, int64_t block_m,
                                    int64_t nblocks, int64_t* block_expert) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= nblocks) return;
  const int64_t row = b * block_m;
  int64_t expert = -1;
  for (int64_t e = 0; e < E && expert < 0; ++e) {
    if (row >= offsets[e] && row < offsets[e + 1]) expert = e;
  }
  block_expert[b] = expert;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> moe_index_cuda(const at::Tensor& indices,
                                                              int64_t num_experts,
                                                              int64_t block_m) {
  TORCH_CHECK_VALUE(indices.dim() == 2 && num_experts >= 1 && block_m >= 1,
                    "gptcore.moe_index: expected indices (T, k), num_experts >= 1, block_m >= 1");
  const DeviceScope device(indices);
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  const int64_t slots = idx.numel(), E = num_experts;
  const int64_t length = slots + E * (block_m - 1);
  const int64_t nblocks = (length + block_m - 1) / block_m;
  const auto opts = idx.options();
  at::Tensor counts = at::empty({E}, opts), offsets = at::empty({E + 1}, opts);
  at::Tensor sorted_slots = at::empty({length}, opts), block_expert = at::empty({nblocks}, opts);
  constexpr int kThreads = 128;
  const int64_t* ip = idx.data_ptr<int64_t>();
  int64_t* op = offsets.data_ptr<int64_t>();
  count_kernel<<<grid_for(E, kThreads), kThreads>>>(ip, slots, E,
                                                           counts.data_ptr<int64_t>());
  offsets_kernel<<<1, 1>>>(counts.data_ptr<int64_t>(), E, block_m, op);
  if (length > 0) {
    fill_kernel<<<grid_for(length, 256), 256>>>(sorted_slots.data_ptr<int64_t>(), length,
                                                       slots);
  }
  scatter_kernel<<<grid_for(E, kThreads), kThreads>>>(ip, slots, E, op,
                                                             sorted_slots.data_ptr<int64_t>());
  if (nblocks > 0) {
    block_expert_kernel<<<grid_for(nblocks, 256), 256>>>(op, E, block_m, nblocks,
                                                                block_expert.data_ptr<int64_t>());
  }
  check_launch("moe_index");
  return {sorted_slots, offsets, block_expert};
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CUDA, m) { m.impl("moe_index", &moe_index_cuda); }

}  // namespace gptcore
