// MXFP4 row kernels on plain pointers, shared by the portable and the AVX2 builds.
#pragma once
#include <cstdint>

namespace gptcore {

// The e2m1 magnitudes by 3-bit code; bit 3 of a code is the sign.
constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Dequantises `nblocks` blocks of 32 values: 16 packed bytes and one e8m0 scale each.
void mxfp4_dequantize_row_portable(const uint8_t* blocks, const uint8_t* scales,
                                   int64_t nblocks, float* out);
void mxfp4_dequantize_row_avx2(const uint8_t* blocks, const uint8_t* scales,
                               int64_t nblocks, float* out);

}  // namespace gptcore
