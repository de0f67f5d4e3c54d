// Rotary row kernels compiled for the portable level (see rotary_kernels.h).
#include "rotary_kernels.h"
#include "rotary_rows.h"

namespace gptcore {

const RotaryKernels kRotaryPortable = {rotary_rows::rows};

}  // namespace gptcore
