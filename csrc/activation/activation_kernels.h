// The activation kernels at each ISA level: the same loops (activation_rows.h, and for GELU
// gelu_rows.h or the vectors of gelu_simd.h) compiled in
// activation_portable.cpp, activation_avx2.cpp and activation_avx512.cpp; the last two are
// called only when cpu_features.h says so. No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

enum class GatedKind { kSwiglu, kGeglu };

struct ActivationKernels {
  // elements [begin, end) of flat fp32 arrays; tanh_form: GELU's tanh approximation, else erf
  void (*gelu_forward)(const float* x, float* y, int64_t begin, int64_t end, bool tanh_form);
  void (*gelu_backward)(const float* dy, const float* x, float* dx, int64_t begin, int64_t end,
                        bool tanh_form);
  // rows [begin, end) of gate_up (rows, 2I) -> y (rows, I), and back
  void (*gated_forward)(const float* gate_up, float* y, int64_t begin, int64_t end, int64_t I,
                        GatedKind kind);
  void (*gated_backward)(const float* dy, const float* gate_up, float* dgate_up, int64_t begin,
                         int64_t end, int64_t I, GatedKind kind);
};

extern const ActivationKernels kActivationPortable;
extern const ActivationKernels kActivationAvx2;
extern const ActivationKernels kActivationAvx512;

}  // namespace gptcore
