// Template definitions for moe_experts.h.
#pragma once
#include <ATen/Parallel.h>

namespace gptcore {

template <typename Fn>
void for_each_item(int64_t items, int64_t scratch_floats, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), items);
  at::parallel_for(0, std::max<int64_t>(threads, 1), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(scratch_floats);
    for (int64_t item = next++; item < items; item = next++) fn(item, scratch.data());
  });
}

}  // namespace gptcore
