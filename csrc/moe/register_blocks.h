// How the expert kernels that read weights in place walk their operands in register blocks,
// shared by each ISA level's files (f32_rows_avx2.cpp / f32_rows_avx512.cpp, mxfp4_avx2.cpp /
// mxfp4_avx512.cpp): a level supplies its register block as a class template, these loops
// cover any row counts with it. Include only from those SIMD files, and instantiate only with
// block templates of an anonymous namespace, so that no instantiation compiled with one level's
// flags can stand in for another level's (the same rule as the files' own inline functions).
#pragma once
#include <algorithm>
#include <cstdint>

namespace gptcore {
namespace register_blocks {

// fp32 row-major weights: weight rows per outer block. Every block of activation rows passes
// over them while they are in L1 (8 rows of K=1024: 32 KB), so DRAM streams each weight once.
constexpr int64_t kWeightBlock = 8;
// fp32 K-major weights: weight rows prefetched this far ahead.
constexpr int64_t kAhead = 8;
// MXFP4: the weight blocks of the next register block's rows are prefetched one 64-byte line
// (4 blocks of 32 codes) at a time.
constexpr int64_t kPrefetchEveryBlocks = 4;

// Block<n>::run(x, out, args...) for a run-time n in [1, N]; nothing for n = 0.
template <template <int> class Block, int N, typename... Args>
void with_rows(int64_t n, const float* x, float* out, Args... args) {
  if constexpr (N > 0) {
    if (n == N) return Block<N>::run(x, out, args...);
    with_rows<Block, N - 1>(n, x, out, args...);
  }
}

// Block<R>::run over nx activation rows of x (row stride ldx) and out (ldo): blocks of R rows,
// then one block of the remaining 1..R-1.
template <template <int> class Block, int R, typename... Args>
void over_rows(int64_t nx, const float* x, int64_t ldx, float* out, int64_t ldo, Args... args) {
  int64_t i = 0;
  for (; i + R <= nx; i += R) Block<R>::run(x + i * ldx, out + i * ldo, args...);
  with_rows<Block, R - 1>(nx - i, x + i * ldx, out + i * ldo, args...);
}

// MXFP4 products out[i * ldo + r] = sum_k W[r, k] x_i[k] (see moe_kernels.h) from register blocks
// Block<R, NX>::run(blocks, scales, K, x, ldx, out, ldo) of R weight rows x NX activation rows.
template <template <int, int> class Block, int R>
struct Mxfp4Rows {
  template <int NX>
  struct Of {
    static void run(const float* x, float* out, const uint8_t* blocks, const uint8_t* scales,
                    int64_t K, int64_t ldx, int64_t ldo) {
      Block<R, NX>::run(blocks, scales, K, x, ldx, out, ldo);
    }
  };
};

// R weight rows (then R/2, ..., 1 for the rows left) times all nx activation rows in blocks of
// NX (the decoded weights are reused within a block and decoded again for the next).
template <template <int, int> class Block, int R, int NX>
void mxfp4_product(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t K,
                   const float* x, int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  const int64_t row_bytes = K / 2, row_scales = K / 32;
  int64_t r = 0;
  for (; r + R <= rows; r += R)
    over_rows<Mxfp4Rows<Block, R>::template Of, NX>(nx, x, ldx, out + r, ldo,
                                                    blocks + r * row_bytes,
                                                    scales + r * row_scales, K, ldx, ldo);
  if constexpr (R > 1) {
    mxfp4_product<Block, R / 2, NX>(blocks + r * row_bytes, scales + r * row_scales, rows - r,
                                    K, x, ldx, nx, out + r, ldo);
  }
}

}  // namespace register_blocks
}  // namespace gptcore
