// Rotary row kernels compiled for the avx512 level (see rotary_kernels.h).
#include "rotary_kernels.h"
#include "rotary_rows.h"

namespace gptcore {

const RotaryKernels kRotaryAvx512 = {rotary_rows::rows};

}  // namespace gptcore
