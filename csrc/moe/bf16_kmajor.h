// bf16 products with K-major weights (csrc/bf16_kmajor_avx512.cpp), called only when
// use_avx512_bf16(). No ATen here.
#pragma once
#include <cstdint>

namespace gptcore {

// out[i * ldo + c] = sum_k x[i * ldx + k] * w[k * ldw + c] for c < cols, i < nx, fp32
// accumulation: the weights are stored K-major (row k holds the k-th input of every output
// column, as transformers stores gpt-oss's experts) and are read in place, two rows of k at a
// time interleaved in registers into the bf16 pairs vdpbf16ps takes. Any K, cols, nx.
void bf16_kmajor_rows_avx512(const uint16_t* w, int64_t ldw, int64_t cols, const uint16_t* x,
                             int64_t ldx, int64_t nx, int64_t K, float* out, int64_t ldo);

}  // namespace gptcore
