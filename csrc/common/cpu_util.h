// Small scalar and tensor helpers shared by the portable CPU kernel files.
#pragma once
#include <ATen/core/Tensor.h>

#include <cmath>

namespace gptcore {

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// An fp32, contiguous copy of t (t itself when it already is one).
inline at::Tensor float_contiguous(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

}  // namespace gptcore
