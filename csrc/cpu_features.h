// Runtime CPU-feature dispatch: AVX2 code runs only where the CPU reports AVX2 + FMA + F16C.
#pragma once

namespace gptcore {

// True when the CPU supports AVX2, FMA and F16C and the AVX2 kernels have not been
// switched off (set_avx2_enabled(false), used by tests to check the portable path).
bool use_avx2();
void set_avx2_enabled(bool enabled);

// True when the CPU has bf16 dot-product instructions (AVX512_BF16), the ones torch's bf16
// matmul (oneDNN) runs on. Without them that matmul is far slower than our fp32 tiles.
bool cpu_has_bf16_dot();

}  // namespace gptcore
