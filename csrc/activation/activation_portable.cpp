// Activation kernels compiled for the portable level (see activation_kernels.h).
#include "activation_kernels.h"
#include "activation_rows.h"

namespace gptcore {

const ActivationKernels kActivationPortable = {
    activation_rows::gelu_forward, activation_rows::gelu_backward, activation_rows::gated_forward,
    activation_rows::gated_backward};

}  // namespace gptcore
