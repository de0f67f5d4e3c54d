// fp32 products of a few activation rows with expert weights read in place (decode and small
// batches: up to 64 rows per expert, see moe_experts_cpu.cpp), one pair per ISA level:
// AVX-512 (f32_rows_avx512.cpp, called only when use_avx512()) and AVX2 (f32_rows_avx2.cpp,
// only when use_avx2()). No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

// Row-major weights: out[i * ldo + c] = sum_k x[i * ldx + k] * w[c * ldw + k] for c < m,
// i < nx (the (E, 2I, H) / (E, H, I) layouts). Any K, m, nx.
void f32_rows_nt_avx512(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                        const float* w, int64_t ldw, float* out, int64_t ldo);
void f32_rows_nt_avx2(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                      const float* w, int64_t ldw, float* out, int64_t ldo);

// K-major weights: out[i * ldo + c] = sum_k x[i * ldx + k] * w[k * ldw + c] (gpt-oss's
// (E, H, 2I) / (E, I, H) storage, see moe_experts_kmajor.cpp). Any K, m, nx.
void f32_rows_nn_avx512(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                        const float* w, int64_t ldw, float* out, int64_t ldo);
void f32_rows_nn_avx2(int64_t nx, int64_t m, int64_t K, const float* x, int64_t ldx,
                      const float* w, int64_t ldw, float* out, int64_t ldo);

}  // namespace gptcore
