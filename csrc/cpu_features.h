// Runtime CPU-feature dispatch: AVX2 code runs only where the CPU reports AVX2 + FMA + F16C.
#pragma once

namespace gptcore {

// True when the CPU supports AVX2, FMA and F16C and the AVX2 kernels have not been
// switched off (set_avx2_enabled(false), used by tests to check the portable path).
bool use_avx2();
void set_avx2_enabled(bool enabled);

}  // namespace gptcore
