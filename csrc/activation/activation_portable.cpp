// Activation kernels compiled for the portable level (see activation_kernels.h): plain loops
// that the compiler vectorises at SSE2 width.
#include "activation_kernels.h"
#include "activation_rows.h"
#include "gelu_rows.h"

namespace gptcore {

const ActivationKernels kActivationPortable = {
    gelu_rows::forward, gelu_rows::backward, activation_rows::gated_forward,
    activation_rows::gated_backward};

}  // namespace gptcore
