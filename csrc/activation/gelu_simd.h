// GELU forward and backward over fp32 arrays with explicit vectors: one template over a vector
// type's operations `V` (activation_avx2.cpp: 8 lanes, activation_avx512.cpp: 16), the tail in
// scalar code (activation_math.h). GCC does not vectorise activation_math's scalar exp at AVX2
// (its clamps become branches), and these forms do fewer operations per element:
//   tanh form  gelu(x) = x / (1 + e), e = exp(-z), z = 2 sqrt(2/pi) (x + 0.044715 x^3), whose
//              derivative s (1 + x (1 - s) z'), s = 1 / (1 + e), reuses the same exp;
//   exact form gelu(x) = x Phi(x), Phi from erf by Abramowitz & Stegun 7.1.26 (|error| <=
//              1.5e-7), whose exp(-x^2 / 2) is also the density in the derivative Phi + x phi:
//              one exp per element forward and backward.
// Include only from the ISA files.
#pragma once
#include <cstdint>

#include "activation_math.h"

namespace gptcore::gelu_simd {
namespace m = activation_math;

constexpr float kTwoK = 2.f * m::kSqrt2OverPi;               // z = x (2k + 2kc x^2)
constexpr float kTwoKc = 2.f * m::kSqrt2OverPi * m::kGeluCubic;
constexpr float kInvSqrt2 = 0.7071067812f, kInvSqrt2Pi = 0.3989422804f;

// 1 - Phi(|x|) = 0.5 erfc(|x| / sqrt 2) and e = exp(-x^2 / 2), for the exact form.
template <class V>
static inline typename V::T upper_tail(typename V::T x, typename V::T& e) {
  const auto a = V::mul(V::abs(x), V::set1(kInvSqrt2));
  const auto t = V::div(V::set1(1.f), V::fma(a, V::set1(0.3275911f), V::set1(1.f)));
  auto p = V::set1(1.061405429f);
  p = V::fma(p, t, V::set1(-1.453152027f));
  p = V::fma(p, t, V::set1(1.421413741f));
  p = V::fma(p, t, V::set1(-0.284496736f));
  p = V::fma(p, t, V::set1(0.254829592f));
  e = V::exp(V::mul(V::mul(x, x), V::set1(-0.5f)));
  return V::mul(V::mul(p, t), V::mul(e, V::set1(0.5f)));
}

// e = exp(-z) of the tanh form.
template <class V>
static inline typename V::T tanh_exp(typename V::T x) {
  const auto z = V::mul(x, V::fma(V::mul(x, x), V::set1(kTwoKc), V::set1(kTwoK)));
  return V::exp(V::sub(V::set1(0.f), z));
}

template <class V>
static void forward(const float* x, float* y, int64_t begin, int64_t end, bool tanh_form) {
  int64_t i = begin;
  for (; i + V::kLanes <= end; i += V::kLanes) {
    const auto v = V::load(x + i);
    typename V::T out;
    if (tanh_form) {
      out = V::div(v, V::add(V::set1(1.f), tanh_exp<V>(v)));
    } else {
      typename V::T e;
      const auto q = upper_tail<V>(v, e);
      out = V::mul(v, V::select_nonneg(v, V::sub(V::set1(1.f), q), q));
    }
    V::store(y + i, out);
  }
  for (; i < end; ++i) y[i] = tanh_form ? m::gelu_tanh(x[i]) : m::gelu_erf(x[i]);
}

template <class V>
static void backward(const float* dy, const float* x, float* dx, int64_t begin, int64_t end,
                     bool tanh_form) {
  const auto one = V::set1(1.f);
  int64_t i = begin;
  for (; i + V::kLanes <= end; i += V::kLanes) {
    const auto v = V::load(x + i);
    typename V::T grad;
    if (tanh_form) {
      const auto s = V::div(one, V::add(one, tanh_exp<V>(v)));
      const auto dz = V::fma(V::mul(v, v), V::set1(3.f * kTwoKc), V::set1(kTwoK));   // z'
      grad = V::mul(s, V::fma(V::mul(v, V::sub(one, s)), dz, one));
    } else {
      typename V::T e;
      const auto q = upper_tail<V>(v, e);
      const auto cdf = V::select_nonneg(v, V::sub(one, q), q);
      grad = V::fma(V::mul(v, V::set1(kInvSqrt2Pi)), e, cdf);
    }
    V::store(dx + i, V::mul(V::load(dy + i), grad));
  }
  for (; i < end; ++i)
    dx[i] = dy[i] * (tanh_form ? m::gelu_tanh_grad(x[i]) : m::gelu_erf_grad(x[i]));
}

}  // namespace gptcore::gelu_simd
