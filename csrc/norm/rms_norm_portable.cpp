// RMSNorm row kernels compiled for the portable level (see rms_norm_kernels.h).
#include "rms_norm_kernels.h"
#include "rms_norm_rows.h"

namespace gptcore {

const RmsNormKernels kRmsNormPortable = {rms_norm_rows::forward, rms_norm_rows::backward};

}  // namespace gptcore
