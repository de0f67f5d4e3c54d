// Scalar exp, sigmoid, erf and tanh written so that GCC vectorises a loop calling them under
// `omp simd` at the width of the including file (no libm calls, no branches): exp by
// Cody-Waite range reduction and a degree-7 Taylor polynomial (< 1 ulp on |r| <= ln2/2), erf by
// Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7). No ATen here.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// static: each ISA's file keeps its own copy (an inline function would let the linker pick one
// ISA's code for all of them).
namespace gptcore::activation_math {

// e^x for finite x clamped to [-87, 88]: every result a normal float, so 2^n needs no special
// case. The clamp is arithmetic on the comparison's 0/1: GCC turns a ternary or fmin here into
// control flow and gives up vectorising below AVX-512 (x = +-inf gives NaN).
static inline float exp_clamped(float x) {
  x += static_cast<float>(x < -87.f) * (-87.f - x);
  x += static_cast<float>(x > 88.f) * (88.f - x);
  constexpr float kRound = 12582912.f;                 // 1.5 * 2^23: adding it rounds to an int
  const float n = (x * 1.44269504f + kRound) - kRound;
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;   // ln2 split in two parts
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float sigmoid(float x) { return 1.f / (1.f + exp_clamped(-x)); }

static inline float erf_approx(float x) {
  const float a = std::fabs(x);
  const float t = 1.f / (1.f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  return std::copysign(1.f - p * t * exp_clamped(-a * a), x);
}

// GELU, tanh form: x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (0.5 (1 + tanh u) =
// sigmoid(2u)). Its derivative: s + x s (1 - s) 2 u'.
constexpr float kSqrt2OverPi = 0.7978845608f;
constexpr float kGeluCubic = 0.044715f;

static inline float gelu_tanh(float x) {
  return x * sigmoid(2.f * kSqrt2OverPi * (x + kGeluCubic * x * x * x));
}

static inline float gelu_tanh_grad(float x) {
  const float s = sigmoid(2.f * kSqrt2OverPi * (x + kGeluCubic * x * x * x));
  const float du = kSqrt2OverPi * (1.f + 3.f * kGeluCubic * x * x);
  return s + x * s * (1.f - s) * 2.f * du;
}

// GELU, exact: x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2; derivative Phi(x) + x phi(x).
static inline float gelu_erf(float x) { return 0.5f * x * (1.f + erf_approx(x * 0.7071067812f)); }

// erf_approx(x / sqrt 2)'s exp(-x^2 / 2) is the density phi's too: one exp serves both.
static inline float gelu_erf_grad(float x) {
  const float e = exp_clamped(-0.5f * x * x);
  const float t = 1.f / (1.f + 0.3275911f * 0.7071067812f * std::fabs(x));
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float cdf = 0.5f * (1.f + std::copysign(1.f - p * t * e, x));
  return cdf + x * 0.3989422804f * e;
}

}  // namespace gptcore::activation_math
