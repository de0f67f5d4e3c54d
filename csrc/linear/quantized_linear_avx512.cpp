// Quantised-linear row kernels compiled for the avx512 level (see quantized_linear_kernels.h),
// with the experts' AVX2 MXFP4 block decoder (MXFP4 decode rows take the fused AVX-512 product
// of mxfp4_avx512.cpp instead: quantized_linear_cpu.cpp).
#include "mxfp4_kernels.h"
#include "quantized_linear_kernels.h"
#include "quantized_linear_rows.h"

namespace gptcore {

const QuantizedLinearKernels kQuantizedLinearAvx512 = {
    quantized_linear_rows::dequantize<mxfp4_dequantize_row_avx2>,
    quantized_linear_rows::gemv<mxfp4_dequantize_row_avx2>};

}  // namespace gptcore
