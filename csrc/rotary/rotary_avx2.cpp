// Rotary row kernels compiled for the avx2 level (see rotary_kernels.h).
#include "rotary_kernels.h"
#include "rotary_rows.h"

namespace gptcore {

const RotaryKernels kRotaryAvx2 = {rotary_rows::rows};

}  // namespace gptcore
