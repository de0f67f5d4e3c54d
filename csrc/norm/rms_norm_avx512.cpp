// RMSNorm row kernels compiled for the avx512 level (see rms_norm_kernels.h).
#include "rms_norm_kernels.h"
#include "rms_norm_rows.h"

namespace gptcore {

const RmsNormKernels kRmsNormAvx512 = {rms_norm_rows::forward, rms_norm_rows::backward};

}  // namespace gptcore
