// Activation kernels compiled for the avx2 level (see activation_kernels.h): GELU with 8-lane
// vectors (gelu_simd.h), the gated activations from the plain loops of activation_rows.h.
#include "activation_kernels.h"
#include "activation_rows.h"
#include "gelu_simd.h"
#include "simd_avx2.h"

namespace gptcore {
namespace {

struct Avx2 {
  using T = __m256;
  static constexpr int64_t kLanes = 8;
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T div(T a, T b) { return _mm256_div_ps(a, b); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T abs(T a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  static T exp(T a) { return exp256(a); }
  // x >= 0 ? a : b
  static T select_nonneg(T x, T a, T b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
  }
};

}  // namespace

const ActivationKernels kActivationAvx2 = {
    gelu_simd::forward<Avx2>, gelu_simd::backward<Avx2>, activation_rows::gated_forward,
    activation_rows::gated_backward};

}  // namespace gptcore
