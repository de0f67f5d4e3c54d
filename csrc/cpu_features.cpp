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

bool detect_bf16_dot() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

}  // namespace

bool use_avx2() {
  static const bool supported = cpu_has_avx2();
  return supported && avx2_enabled.load(std::memory_order_relaxed);
}

void set_avx2_enabled(bool enabled) { avx2_enabled.store(enabled); }

bool cpu_has_bf16_dot() {
  static const bool supported = detect_bf16_dot();
  return supported;
}

}  // namespace gptcore
