// The attention forward piece in column layout: Q^T, S^T and O^T hold one query row per
// column, so the kernels (csrc/attention_cols_avx512.cpp, 16 rows per vector, and
// csrc/attention_cols_avx2.cpp, 8) run the online softmax of a vector of rows at once and read
// K and V in place. One driver for both (ColsKernels): they differ in vector and tile width.
// Scores are in base 2: Q is scaled by scale * log2(e), so exp is exp2 and softcap takes
// cap * log2(e) (c tanh(s / c) scales with s).
// Why: the row layout with MKL sgemm tiles spent most of its time in MKL, part of it packing
// operands. Here the two GEMMs run at the FMA peak with no packing, the softmax passes take a
// smaller share, and the forward gained on SDPA, full and causal
// (docs/cpu-isa.md, "Measurements behind the code").
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "attention_cols.h"

namespace gptcore::attn {

const ColsKernels* cols_kernels() {
#if GPTCORE_X86  // the kernels exist only on x86 builds
  if (use_avx512()) return &kColsAvx512;
  if (use_avx2()) return &kColsAvx2;
#endif
  return nullptr;
}

#if GPTCORE_X86
namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;
constexpr int64_t kColsKeys = 128;  // as the row layout's kTileKeys (not tuned here)

float* aligned_64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

// For each `chunk`-column chunk of the piece (M query rows, row i at position p0 + i % bq): the
// rows [lo, hi) of the key tile [j0, j0 + nk) that any of its query rows may see. Skipping the
// rest saves a quarter of each causal diagonal tile; a chunk spanning two heads sees them all.
void chunk_rows(const Problem& pb, int64_t p0, int64_t bq, int64_t M, int64_t Mp, int64_t chunk,
                int64_t j0, int64_t nk, int64_t Lk, int64_t* rows) {
  for (int64_t c = 0; c < Mp; c += chunk) {
    const int64_t last = std::min(M, c + chunk) - 1;
    const bool one_head = c / bq == last / bq;
    const int64_t first_p = p0 + (one_head ? c % bq : 0);
    const int64_t last_p = p0 + (one_head ? last % bq : bq - 1);
    const auto [lo, hi] = pb.band.keys(first_p, last_p + 1, Lk);
    int64_t* pair = rows + c / chunk * 2;
    pair[0] = std::clamp<int64_t>(lo - j0, 0, nk);
    pair[1] = std::clamp<int64_t>(hi - j0, pair[0], nk);
  }
}

}  // namespace

template <typename T>
void run_item_cols(const ColsKernels& ker, const Problem& pb, int64_t n, int64_t h, int64_t i0,
                   int64_t i1, int64_t k0, int64_t k1, const T* q, const T* k, const T* v,
                   const PackedKV* packed, float* o_out, float* lse_out) {
  const int64_t D = pb.D, Dp = pb.Dp, G = pb.G, bq = i1 - i0, M = G * bq;
  const int64_t Mp = round_up(M, ker.lanes), Lk = pb.len_k[n];
  const Layout &ql = pb.q_in, &kvl = pb.kv_in;
  const int64_t p0 = i0 + pb.len_k[n] - pb.len_q[n];  // position of row i0
  constexpr bool in_place = std::is_same_v<T, float>;
  thread_local std::vector<float> scratch, kbuf, vbuf;
  thread_local std::vector<int64_t> rows;  // 2 per chunk of ker.chunk columns (chunk_rows)
  rows.resize((Mp + ker.chunk - 1) / ker.chunk * 2);
  // Q^T, S^T, O^T (D, Mp), (kColsKeys, Mp), (D, Mp) and m, l, alpha, colmax (Mp): one buffer,
  // 64-byte aligned, so no vector load of a row straddles two cache lines.
  scratch.resize((2 * D + kColsKeys + 4) * Mp + 16);
  float* qt = aligned_64(scratch.data());
  float *st = qt + D * Mp, *ot = st + kColsKeys * Mp, *m = ot + D * Mp, *l = m + Mp,
        *alpha = l + Mp, *colmax = alpha + Mp;
  std::fill(qt, qt + D * Mp, 0.0f);  // column g * bq + i is query row i0 + i of head h * G + g
  for (int64_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < bq; ++i) {
      const T* src = q + ql.at(n, h * G + g, i0 + i);
      for (int64_t d = 0; d < D; ++d)
        qt[d * Mp + g * bq + i] = static_cast<float>(src[d]) * (pb.scale * kLog2e);
    }
  std::fill(ot, ot + D * Mp, 0.0f);
  std::fill(m, m + Mp, -INFINITY);
  std::fill(l, l + Mp, 0.0f);
  if (!packed && !in_place) {
    kbuf.resize(kColsKeys * Dp);
    vbuf.resize(kColsKeys * Dp);
  }
  for (int64_t j0 = k0; j0 < k1; j0 += kColsKeys) {
    const int64_t nk = std::min(kColsKeys, k1 - j0);
    const float *kt = kbuf.data(), *vt = vbuf.data();
    int64_t ld = Dp;
    if (packed) {
      kt = packed->k_at(n, h, j0, Lk);
      vt = packed->v_at(n, h, j0, Lk);
    } else if constexpr (in_place) {
      kt = k + kvl.at(n, h, j0);
      vt = v + kvl.at(n, h, j0);
      ld = kvl.row;
    } else {
      pack_rows(k + kvl.at(n, h, j0), kvl.row, nk, D, Dp, 1.0f, kbuf.data());
      pack_rows(v + kvl.at(n, h, j0), kvl.row, nk, D, Dp, 1.0f, vbuf.data());
    }
    chunk_rows(pb, p0, bq, M, Mp, ker.chunk, j0, nk, Lk, rows.data());
    ker.scores(rows.data(), Mp, D, kt, ld, qt, st, colmax);
    const bool masked = !pb.band.all_visible(p0, p0 + bq, j0, j0 + nk);
    if (pb.softcap > 0) apply_softcap(st, Mp, nk, Mp, pb.softcap * kLog2e);
    if (masked)
      for (int64_t j = 0; j < nk; ++j)
        for (int64_t g = 0; g < G; ++g) pb.band.mask_positions(&st[j * Mp + g * bq], j0 + j, p0, bq);
    const bool changed = masked || pb.softcap > 0;  // then colmax is stale
    ker.softmax(st, rows.data(), Mp, changed ? nullptr : colmax, m, l, alpha);
    ker.values(D, Mp, rows.data(), vt, ld, st, alpha, ot);
  }
  for (int64_t r = 0; r < M; ++r) {
    const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
    for (int64_t d = 0; d < D; ++d) o_out[r * Dp + d] = ot[d * Mp + r] * inv;
    lse_out[r] = l[r] > 0 ? (m[r] + std::log2(l[r])) * kLn2 : -INFINITY;
  }
}

#define GPTCORE_INSTANTIATE(T)                                                                  \
  template void run_item_cols<T>(const ColsKernels&, const Problem&, int64_t, int64_t, int64_t, \
                                 int64_t, int64_t, int64_t, const T*, const T*, const T*,       \
                                 const PackedKV*, float*, float*);
GPTCORE_INSTANTIATE(float)
GPTCORE_INSTANTIATE(double)
GPTCORE_INSTANTIATE(c10::Half)
GPTCORE_INSTANTIATE(c10::BFloat16)
#undef GPTCORE_INSTANTIATE
#endif

}  // namespace gptcore::attn
