// Runtime CPU-feature detection (gcc/clang builtins read CPUID once).
#include "cpu_features.h"

#include <atomic>

namespace gptcore {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

std::atomic<bool> avx2_enabled{true};

}  // namespace

bool use_avx2() {
  static const bool supported = cpu_has_avx2();
  return supported && avx2_enabled.load(std::memory_order_relaxed);
}

void set_avx2_enabled(bool enabled) { avx2_enabled.store(enabled); }

}  // namespace gptcore
