// Runtime CPU-feature detection (gcc/clang builtins read CPUID once) and the ISA-level switch.
#include "cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

#if GPTCORE_X86
#include <cpuid.h>
#endif

#include "blas.h"

namespace gptcore {
namespace {

Isa detect_isa() {
#if GPTCORE_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return Isa::kAvx512Bf16;
  if (avx512) return Isa::kAvx512;
  if (avx2) return Isa::kAvx2;
#endif
  return Isa::kPortable;
}

std::atomic<int> active{-1};  // -1: not chosen yet, use cpu_isa()

}  // namespace

Isa cpu_isa() {
  static const Isa detected = detect_isa();
  return detected;
}

Isa active_isa() {
  const int level = active.load(std::memory_order_relaxed);
  return level < 0 ? cpu_isa() : static_cast<Isa>(level);
}

Isa set_isa(Isa level) {
  const Isa chosen = std::min(level, cpu_isa());
  active.store(static_cast<int>(chosen));
  return chosen;
}

const char* isa_name(Isa level) {
  switch (level) {
    case Isa::kAvx512Bf16: return "avx512_bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}


bool cpu_has_bf16_dot() { return cpu_isa() >= Isa::kAvx512Bf16; }

namespace {

bool cpu_and_os_have_amx_bf16() {
#if GPTCORE_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // OSXSAVE
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx = (d & (1u << 22)) && (d & (1u << 24));                    // AMX-BF16, AMX-TILE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return amx && (lo & (3u << 17)) == (3u << 17);                            // XTILECFG, XTILEDATA
#else
  return false;
#endif
}

bool onednn_isa_cap_allows_amx() {
  for (const char* name : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    std::string cap(value);
    std::transform(cap.begin(), cap.end(), cap.begin(), [](unsigned char ch) {
      return static_cast<char>(std::toupper(ch));
    });
    return cap == "ALL" || cap == "DEFAULT" || cap.find("AMX") != std::string::npos;
  }
  return true;
}

}  // namespace

bool onednn_bf16_on_amx() {
  static const bool on_amx = cpu_and_os_have_amx_bf16() && onednn_isa_cap_allows_amx();
  return on_amx;
}

std::vector<std::pair<std::string, std::string>> op_paths() {
  const std::string level = isa_name(active_isa());
  const std::string sgemm = blas_available() ? "BLAS sgemm" : "our tiles";
  const std::pair<std::string, std::string> route = {
      "route", use_avx512() ? "AVX-512 softmax / sigmoid and backward rows, AVX-512 top-k from 16 "
                            "experts (scalar below)"
                            : "scalar loops"};
  if (!use_avx2()) {
    return {{"attention", "portable loops"},
            {"moe_experts fp32", "portable tiles + " + sgemm + ", at::mm for large experts"},
            {"moe_experts bf16", cpu_has_bf16_dot() ? "at::mm (oneDNN bf16)" : "fp32 tiles"},
            {"moe_experts mxfp4", "dequantised tiles + " + sgemm},
            route};
  }
  return {
      {"attention fp32",
       use_avx512()
           ? "forward: AVX-512 column-layout tiles (our 512-bit GEMMs, vertical softmax) for "
             ">= 16 rows, AVX-512 row kernels below; backward: our AVX-512 register tiles, "
             "AVX-512 softmax rows"
           : "forward: AVX2 column-layout tiles (our 256-bit GEMMs, vertical softmax) for >= 8 "
             "rows, AVX2 row kernels below; backward: our AVX2 register tiles, AVX2 softmax "
             "rows"},
      {"attention bf16",
       use_avx512_bf16()
           ? std::string(onednn_bf16_on_amx()
                             ? "torch's flash attention (oneDNN on AMX) for >= 16 query rows "
                               "without sinks, softcap or window (causal only when Sq == Sk); "
                               "else "
                             : "") +
                 "AVX512_BF16 vdpbf16ps tiles, fp32 accumulation (forward); backward as fp32"
           : "bf16 converted to fp32, then as fp32"},
      {"moe_experts fp32",
       std::string(use_avx512() ? "AVX-512 small-row kernel for <= 64"
                                : "AVX2 small-row kernel for <= 32 (K-major weights: 2)") +
           " rows per expert, " + sgemm + " tiles above, at::mm (BLAS) for experts of >= 256 "
           "rows"},
      {"moe_experts bf16",
       use_avx512_bf16()
           ? std::string("AVX512_BF16 vdpbf16ps fused experts for <= 2 rows per expert (or odd "
                         "H, I), ") +
                 (onednn_bf16_on_amx()
                      ? "blocked vdpbf16ps GEMMs below 8, at::mm (oneDNN on AMX) from 8"
                      : "blocked vdpbf16ps GEMMs for more")
           : (cpu_has_bf16_dot() ? "at::mm (oneDNN bf16)" : "fp32 tiles")},
      {"moe_experts mxfp4", std::string(use_avx512() ? "AVX-512 fused decode + fp32 FMA for <= 64"
                                                   : "AVX2 fused decode + fp32 FMA for <= 16") +
                                " rows per expert, else dequantised tiles + " + sgemm},
      route,
  };
}

}  // namespace gptcore
