// Activation kernels compiled for the avx512 level (see activation_kernels.h): GELU with 16-lane
// vectors (gelu_simd.h), the gated activations from the plain loops of activation_rows.h.
#include "activation_kernels.h"
#include "activation_rows.h"
#include "gelu_simd.h"
#include "simd_avx512.h"

namespace gptcore {
namespace {

struct Avx512 {
  using T = __m512;
  static constexpr int64_t kLanes = 16;
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T div(T a, T b) { return _mm512_div_ps(a, b); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T abs(T a) { return _mm512_abs_ps(a); }
  static T exp(T a) { return exp512(a); }
  // x >= 0 ? a : b
  static T select_nonneg(T x, T a, T b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), b, a);
  }
};

}  // namespace

const ActivationKernels kActivationAvx512 = {
    gelu_simd::forward<Avx512>, gelu_simd::backward<Avx512>, activation_rows::gated_forward,
    activation_rows::gated_backward};

}  // namespace gptcore
