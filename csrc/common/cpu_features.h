// Runtime CPU-feature dispatch: each SIMD path runs only where CPUID reports its instructions,
// and tests can lower the level to check the slower paths on the same machine.
#pragma once
#include <string>
#include <utility>
#include <vector>

// 1 where the compiler targets x86-64 (or 32-bit x86): only then are the *_avx2.cpp and
// *_avx512.cpp files built (CMakeLists.txt), so every call into them sits under #if GPTCORE_X86.
// CMake defines it to 0 for a non-x86 GPTCORE_TARGET_ARCH.
#ifndef GPTCORE_X86
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define GPTCORE_X86 1
#else
#define GPTCORE_X86 0
#endif
#endif

namespace gptcore {

// The instruction-set levels our kernels have paths for, each including the one below it.
//   kAvx2:       AVX2 + FMA + F16C (256-bit fp32 tiles)
//   kAvx512:     AVX-512 F/BW/VL/DQ (512-bit fp32 tiles, masked tails)
//   kAvx512Bf16: kAvx512 + AVX512_BF16 (vdpbf16ps bf16 dot products, fp32 accumulation)
enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

// The highest level this CPU supports (CPUID, read once; kPortable off x86).
Isa cpu_isa();
// The level the kernels use now: cpu_isa() unless lowered by set_isa.
Isa active_isa();
// Chooses the level, clamped to cpu_isa(); returns the level now active.
Isa set_isa(Isa level);
const char* isa_name(Isa level);

inline bool use_avx2() { return active_isa() >= Isa::kAvx2; }
inline bool use_avx512() { return active_isa() >= Isa::kAvx512; }
inline bool use_avx512_bf16() { return active_isa() >= Isa::kAvx512Bf16; }

// True when the CPU has bf16 dot-product instructions (AVX512_BF16), the ones torch's bf16
// matmul (oneDNN) runs on. Without them that matmul is far slower than our fp32 tiles.
// A property of the CPU, not of the level chosen with set_isa.
bool cpu_has_bf16_dot();

// True when torch's bf16 matmul (oneDNN) runs on AMX tiles: the CPU has AMX-BF16, the OS
// enables the tile state, and ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) does not cap oneDNN
// below AMX. A property of the CPU and of oneDNN's settings, not of the level chosen with set_isa.
bool onednn_bf16_on_amx();

// Which path and which GEMM library each op and dtype takes at the active level (build_info).
std::vector<std::pair<std::string, std::string>> op_paths();

}  // namespace gptcore
