// A dynamic work queue over at::parallel_for, shared by the attention and MoE kernels.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace gptcore {

// Runs fn(item, thread_scratch) for item in [0, n) on every thread, each thread taking the next
// unclaimed item from a shared counter: items differ in cost (causal and windowed attention
// tiles, experts with different token counts), so static chunks would leave a core idle. Each
// thread owns `scratch_floats` floats of scratch. Results must not depend on the schedule.
template <typename Fn>
void parallel_items(int64_t n, int64_t scratch_floats, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    std::vector<float> scratch(scratch_floats);
    for (int64_t i = next++; i < n; i = next++) fn(i, scratch.data());
  });
}

// The same without scratch: fn(item).
template <typename Fn>
void parallel_items(int64_t n, const Fn& fn) {
  parallel_items(n, 0, [&](int64_t i, float*) { fn(i); });
}

}  // namespace gptcore
