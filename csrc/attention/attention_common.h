// Shared pieces of the CPU attention forward and backward: where each (sequence, head, row)
// lives in memory, the visibility band of a query position, fp32 tile packing, and the
// dynamic work queue both passes use.
#pragma once
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_kernels.h"
#include "cpu_features.h"
#include "parallel.h"

namespace gptcore::attn {

// The row kernels of the active ISA level: the forward's pieces of fewer rows than one column-
// layout vector (decode), the portable level's forward, and the softmax rows of the backward and
// of the bf16 forward. (Larger forward pieces run in column layout: attention_cols.h.)
inline const AttentionKernels& kernels() {
#if GPTCORE_X86
  if (use_avx512()) return kAttentionAvx512;
  if (use_avx2()) return kAttentionAvx2;
#endif
  return kAttentionPortable;
}

// Element offset of row i of head h in sequence n: base[n] + h * head + i * row.
struct Layout {
  std::vector<int64_t> base;
  int64_t head, row;
  int64_t at(int64_t n, int64_t h, int64_t i) const { return base[n] + h * head + i * row; }
};

// The keys a query at position p (bottom-right aligned: p = i + Lk - Lq) sees:
// p - left <= j <= p + right, a negative bound meaning unbounded.
struct Band {
  int64_t left, right;

  // [lo, hi): the keys any position in [p0, p1) may see, clipped to [0, Lk).
  std::pair<int64_t, int64_t> keys(int64_t p0, int64_t p1, int64_t Lk) const {
    const int64_t lo = left < 0 ? 0 : std::max<int64_t>(0, p0 - left);
    const int64_t hi = right < 0 ? Lk : std::min<int64_t>(Lk, p1 - 1 + right + 1);
    return {lo, std::max(lo, hi)};
  }
  // [lo, hi): the positions that may see any key in [j0, j1), clipped to [p_min, p_max).
  std::pair<int64_t, int64_t> positions(int64_t j0, int64_t j1, int64_t p_min,
                                        int64_t p_max) const {
    const int64_t lo = right < 0 ? p_min : std::max(p_min, j0 - right);
    const int64_t hi = left < 0 ? p_max : std::min(p_max, j1 - 1 + left + 1);
    return {lo, std::max(lo, hi)};
  }
  // Whether every position in [p0, p1) sees every key in [j0, j1): then no mask is applied.
  bool all_visible(int64_t p0, int64_t p1, int64_t j0, int64_t j1) const {
    return (left < 0 || j0 >= p1 - 1 - left) && (right < 0 || j1 - 1 <= p0 + right);
  }
  // Sets the scores of keys [j0, j0 + n) that position p cannot see to -inf.
  void mask_row(float* s, int64_t p, int64_t j0, int64_t n) const {
    const int64_t lo = left < 0 ? 0 : std::clamp<int64_t>(p - left - j0, 0, n);
    const int64_t hi = right < 0 ? n : std::clamp<int64_t>(p + right + 1 - j0, lo, n);
    std::fill(s, s + lo, -INFINITY);
    std::fill(s + hi, s + n, -INFINITY);
  }
  // Sets s[i] to -inf for the positions p0 + i (i < n) that cannot see key j.
  void mask_positions(float* s, int64_t j, int64_t p0, int64_t n) const {
    const int64_t lo = right < 0 ? 0 : std::clamp<int64_t>(j - right - p0, 0, n);
    const int64_t hi = left < 0 ? n : std::clamp<int64_t>(j + left + 1 - p0, lo, n);
    std::fill(s, s + lo, -INFINITY);
    std::fill(s + hi, s + n, -INFINITY);
  }
};

// Sequences and their layouts: dense (B, H, S, D) tensors are B sequences of equal length,
// packed varlen (T, H, D) tensors are sequences at cu_seqlens offsets.
struct Problem {
  bool dense;
  int64_t nseq, Hq, Hkv, G, D, Dp;
  std::vector<int64_t> start_q, start_k, len_q, len_k;  // rows (varlen) per sequence
  float scale, softcap;
  Band band;
  const float* sinks;  // (Hq,) fp32, or nullptr
  // Where the rows of the inputs q, k and v (k and v share strides) and of dout lie: read
  // through their strides, so that transposed views and views of a fused projection cost no
  // copy. Outputs and scratch use the contiguous layouts below.
  Layout q_in, kv_in, dout_in;

  // Layout of a contiguous q-shaped tensor with `width` values per row (width 1 for lse).
  Layout q_layout(int64_t width) const { return layout(start_q, len_q, Hq, width); }
  Layout kv_layout(int64_t width) const { return layout(start_k, len_k, Hkv, width); }
  // Layout of a q-shaped (is_q) or k-shaped tensor t with unit stride in its last dim.
  Layout strided(const at::Tensor& t, bool is_q) const {
    const auto& start = is_q ? start_q : start_k;
    Layout out{std::vector<int64_t>(nseq), t.stride(1), dense ? t.stride(2) : t.stride(0)};
    for (int64_t n = 0; n < nseq; ++n) out.base[n] = dense ? n * t.stride(0) : start[n] * t.stride(0);
    return out;
  }

 private:
  Layout layout(const std::vector<int64_t>& start, const std::vector<int64_t>& len, int64_t H,
                int64_t width) const {
    Layout out{std::vector<int64_t>(nseq), 0, 0};
    const int64_t S = nseq ? len[0] : 0;
    for (int64_t n = 0; n < nseq; ++n)
      out.base[n] = dense ? n * H * S * width : start[n] * H * width;
    out.head = dense ? S * width : width;
    out.row = dense ? width : H * width;
    return out;
  }
};

// Problem for dense q (B, Hq, Sq, D), k (B, Hkv, Sk, D) or packed varlen q (Tq, Hq, D) with
// cu_seqlens (nullptr for dense). Checks the offsets the Python layer may not have checked.
// q and k must have unit stride in the last dim (unit_rows); v must have k's strides.
Problem make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor* cu_q,
                     const at::Tensor* cu_k, const c10::optional<at::Tensor>& sinks_f32,
                     double scale, int64_t left, int64_t right, double softcap);

// t itself when its rows are unit-stride (any other strides are read as they are), else a
// contiguous copy.
inline at::Tensor unit_rows(const at::Tensor& t) {
  return t.dim() == 0 || t.stride(-1) == 1 || t.size(-1) <= 1 ? t : t.contiguous();
}

// k and v read through one layout: as they are when their strides agree (views of one fused
// projection do), else both contiguous.
inline std::pair<at::Tensor, at::Tensor> shared_rows(const at::Tensor& k, const at::Tensor& v) {
  at::Tensor kc = unit_rows(k), vc = unit_rows(v);
  if (kc.strides() != vc.strides()) return {k.contiguous(), v.contiguous()};
  return {kc, vc};
}

// Copies `rows` rows of D values (row stride `stride`) times `mul` into dst (rows x Dp, fp32),
// zero-padding columns D..Dp.
template <typename T>
void pack_rows(const T* src, int64_t stride, int64_t rows, int64_t D, int64_t Dp, float mul,
               float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * stride;
    float* d = dst + r * Dp;
    for (int64_t c = 0; c < D; ++c) d[c] = static_cast<float>(s[c]) * mul;
    std::fill(d + D, d + Dp, 0.0f);
  }
}

// K and V as fp32 rows of Dp values for every (sequence, kv head): converted once per call
// instead of once per query block.
struct PackedKV {
  std::vector<float> k, v;
  std::vector<int64_t> base;  // per sequence: first row of head 0
  int64_t Dp;
  const float* k_at(int64_t n, int64_t h, int64_t j, int64_t len) const {
    return k.data() + (base[n] + h * len + j) * Dp;
  }
  const float* v_at(int64_t n, int64_t h, int64_t j, int64_t len) const {
    return v.data() + (base[n] + h * len + j) * Dp;
  }
};

template <typename T>
PackedKV pack_kv(const Problem& pb, const T* k, const T* v) {
  PackedKV p{{}, {}, std::vector<int64_t>(pb.nseq), pb.Dp};
  int64_t rows = 0;
  for (int64_t n = 0; n < pb.nseq; ++n) {
    p.base[n] = rows;
    rows += pb.Hkv * pb.len_k[n];
  }
  p.k.resize(rows * pb.Dp);
  p.v.resize(rows * pb.Dp);
  const Layout& kvl = pb.kv_in;
  parallel_items(pb.nseq * pb.Hkv, [&](int64_t item) {
    const int64_t n = item / pb.Hkv, h = item % pb.Hkv, len = pb.len_k[n];
    pack_rows(k + kvl.at(n, h, 0), kvl.row, len, pb.D, pb.Dp, 1.0f,
              p.k.data() + (p.base[n] + h * len) * pb.Dp);
    pack_rows(v + kvl.at(n, h, 0), kvl.row, len, pb.D, pb.Dp, 1.0f,
              p.v.data() + (p.base[n] + h * len) * pb.Dp);
  });
  return p;
}

// Scores after softcap: c * tanh(s / c) for the first n of each of M rows.
inline void apply_softcap(float* s, int64_t ld, int64_t M, int64_t n, float cap) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < n; ++j) s[r * ld + j] = cap * std::tanh(s[r * ld + j] / cap);
}

}  // namespace gptcore::attn
