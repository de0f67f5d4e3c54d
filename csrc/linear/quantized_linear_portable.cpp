// Quantised-linear row kernels compiled for the portable level (see quantized_linear_kernels.h),
// with the experts' MXFP4 block decoder of this level (mxfp4_kernels.h).
#include "mxfp4_kernels.h"
#include "quantized_linear_kernels.h"
#include "quantized_linear_rows.h"

namespace gptcore {

const QuantizedLinearKernels kQuantizedLinearPortable = {
    quantized_linear_rows::dequantize<mxfp4_dequantize_row_portable>,
    quantized_linear_rows::gemv<mxfp4_dequantize_row_portable>};

}  // namespace gptcore
