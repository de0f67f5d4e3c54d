// Attention forward on CPU: flash-attention tiling (Dao et al. 2022) with online softmax in fp32.
// A work item is (sequence, kv head, block of query positions) and holds the query heads of a
// GQA group together, so each K/V tile is packed once for G heads; decode-sized problems also
// split the key range across threads and merge the pieces by their log-sum-exp.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <type_traits>

#include "attention_bf16.h"
#include "attention_onednn.h"
#include "attention_cols.h"
#include "attention_common.h"
#include "checks.h"

namespace gptcore::attn {

// Tile sizes: M = G * (query positions) of about 128 rows, 128 keys per tile. The score tile
// (128 x 128 fp32, 64 KB), the Q tile and the K and V tiles (32 KB each at D=64) sit in the
// 512 KB L2; sgemm's own blocking keeps its panels in the 32 KB L1. Of 64 or 128 rows by 128
// or 256 keys, 128 x 128 ran best against SDPA, full and causal
// (docs/cpu-isa.md, "Measurements behind the code").
constexpr int64_t kTileRows = 128;
constexpr int64_t kTileKeys = 128;

Problem make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor* cu_q,
                     const at::Tensor* cu_k, const c10::optional<at::Tensor>& sinks_f32,
                     double scale, int64_t left, int64_t right, double softcap) {
  Problem pb;
  pb.dense = cu_q == nullptr;
  pb.Hq = q.size(1);  // heads sit at dim 1 of both (B, H, S, D) and (T, H, D)
  pb.Hkv = k.size(1);
  pb.D = q.size(-1);
  TORCH_CHECK_VALUE(pb.Hkv > 0 && pb.Hq % pb.Hkv == 0, "gptcore.attention: k has ", pb.Hkv,
                    " heads, which must divide q's ", pb.Hq);
  TORCH_CHECK_VALUE(k.size(-1) == pb.D, "gptcore.attention: k's head dim ", k.size(-1),
                    " differs from q's ", pb.D);
  pb.G = pb.Hq / pb.Hkv;
  pb.Dp = round_up(std::max<int64_t>(pb.D, 1), kPanel);
  pb.scale = static_cast<float>(scale);
  pb.softcap = static_cast<float>(softcap);
  pb.band = Band{left, right};
  pb.sinks = sinks_f32.has_value() ? sinks_f32->data_ptr<float>() : nullptr;
  if (pb.dense) {
    TORCH_CHECK_VALUE(k.size(0) == q.size(0), "gptcore.attention: k's batch ", k.size(0),
                      " differs from q's ", q.size(0));
    pb.nseq = q.size(0);
    pb.len_q.assign(pb.nseq, q.size(2));
    pb.len_k.assign(pb.nseq, k.size(2));
    pb.start_q.assign(pb.nseq, 0);
    pb.start_k.assign(pb.nseq, 0);
    pb.q_in = pb.strided(q, true);
    pb.kv_in = pb.strided(k, false);
    return pb;
  }
  for (const auto& [cu, total, name] : {std::tuple{cu_q, q.size(0), "cu_seqlens_q"},
                                        std::tuple{cu_k, k.size(0), "cu_seqlens_k"}}) {
    TORCH_CHECK_TYPE(cu->scalar_type() == at::kInt && cu->dim() == 1 && cu->numel() >= 1,
                     "gptcore.attention_varlen: ", name, " must be a 1-D int32 tensor, got ",
                     cu->scalar_type(), " ", cu->sizes());
    const at::Tensor c = cu->contiguous();
    const int32_t* p = c.data_ptr<int32_t>();
    TORCH_CHECK_VALUE(p[0] == 0 && p[c.numel() - 1] == total, "gptcore.attention_varlen: ", name,
                      " must start at 0 and end at the packed length ", total, ", got ", p[0],
                      " ... ", p[c.numel() - 1]);
    for (int64_t n = 0; n + 1 < c.numel(); ++n)
      TORCH_CHECK_VALUE(p[n + 1] >= p[n], "gptcore.attention_varlen: ", name,
                        " must be non-decreasing, got ", p[n], " then ", p[n + 1]);
    auto& start = cu == cu_q ? pb.start_q : pb.start_k;
    auto& len = cu == cu_q ? pb.len_q : pb.len_k;
    for (int64_t n = 0; n + 1 < c.numel(); ++n) {
      start.push_back(p[n]);
      len.push_back(p[n + 1] - p[n]);
    }
  }
  TORCH_CHECK_VALUE(cu_q->numel() == cu_k->numel(), "gptcore.attention_varlen: cu_seqlens_q has ",
                    cu_q->numel(), " offsets but cu_seqlens_k has ", cu_k->numel());
  pb.nseq = cu_q->numel() - 1;
  pb.q_in = pb.strided(q, true);
  pb.kv_in = pb.strided(k, false);
  return pb;
}

namespace {

// A window narrow enough that a query block sees about window + rows keys gets half-height
// blocks: under a 128-key window 64-row blocks beat 128 and 32 rows, and one 256-key tile
// instead of 128 + 63 keys changed nothing (docs/cpu-isa.md, "Measurements behind the code").
bool narrow_window(const Problem& pb) { return pb.band.left >= 0 && pb.band.left < 512; }

// One (sequence, kv head, query positions [i0, i1), keys [k0, k1)) piece of the output.
struct Item {
  int64_t n, h, i0, i1, k0, k1;
};

// The result of a piece before the sink joins: o normalised over the piece's keys (M x Dp)
// and its log-sum-exp per row (-inf where the piece saw no key).
// K/V tiles come from `packed` when given, else straight from k/v when they are fp32 rows of
// Dp values, else are converted here (decode: each tile is read once).
template <typename T>
void run_item(const Problem& pb, const Item& it, const T* q, const T* k, const T* v,
              const PackedKV* packed, float* o_out, float* lse_out) {
  const int64_t D = pb.D, Dp = pb.Dp, bq = it.i1 - it.i0, M = pb.G * bq;
  const AttentionKernels& ker = kernels();
  const Layout &ql = pb.q_in, &kvl = pb.kv_in;
  const int64_t shift = pb.len_k[it.n] - pb.len_q[it.n];  // position of row i is i + shift
  const int64_t BKp = round_up(kTileKeys, kPanel), Lk = pb.len_k[it.n];
  constexpr bool is_f32 = std::is_same_v<T, float>;
  const bool direct = !packed && is_f32 && D == Dp;
  const bool convert = !packed && !direct;
  std::vector<float> qs(M * Dp), kbuf(convert ? kTileKeys * Dp : 0),
      vbuf(convert ? kTileKeys * Dp : 0), s(M * BKp), m(M, -INFINITY), l(M, 0.0f);
  float* o = o_out;
  std::fill(o, o + M * Dp, 0.0f);
  for (int64_t g = 0; g < pb.G; ++g)
    pack_rows(q + ql.at(it.n, it.h * pb.G + g, it.i0), ql.row, bq, D, Dp, pb.scale,
              qs.data() + g * bq * Dp);
  const int64_t p0 = it.i0 + shift, p1 = it.i1 + shift;
  for (int64_t j0 = it.k0; j0 < it.k1; j0 += kTileKeys) {
    const int64_t nk = std::min(kTileKeys, it.k1 - j0);
    const float *kt = kbuf.data(), *vt = vbuf.data();
    int64_t ld = Dp;
    if (packed) {
      kt = packed->k_at(it.n, it.h, j0, Lk);
      vt = packed->v_at(it.n, it.h, j0, Lk);
    } else if (convert) {
      pack_rows(k + kvl.at(it.n, it.h, j0), kvl.row, nk, D, Dp, 1.0f, kbuf.data());
      pack_rows(v + kvl.at(it.n, it.h, j0), kvl.row, nk, D, Dp, 1.0f, vbuf.data());
    } else if constexpr (is_f32) {
      kt = k + kvl.at(it.n, it.h, j0);
      vt = v + kvl.at(it.n, it.h, j0);
      ld = kvl.row;
    }
    ker.gemm_abt(M, nk, D, qs.data(), Dp, kt, ld, s.data(), BKp);
    if (pb.softcap > 0) apply_softcap(s.data(), BKp, M, nk, pb.softcap);
    const bool masked = !pb.band.all_visible(p0, p1, j0, j0 + nk);
    for (int64_t r = 0; r < M; ++r) {
      float* row = s.data() + r * BKp;
      if (masked) pb.band.mask_row(row, p0 + r % bq, j0, nk);
      const float m_new = std::max(m[r], ker.row_max(row, nk));
      if (m_new == -INFINITY) {  // nothing visible yet: contributes zeros
        std::fill(row, row + nk, 0.0f);
        continue;
      }
      const float alpha = std::exp(m[r] - m_new);
      const float sum = ker.exp_row(row, nk, m_new);
      if (alpha != 1.0f)
        for (int64_t c = 0; c < Dp; ++c) o[r * Dp + c] *= alpha;
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
    }
    ker.gemm_ab_acc(M, Dp, nk, s.data(), BKp, vt, ld, o, Dp);
  }
  for (int64_t r = 0; r < M; ++r) {
    const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
    for (int64_t c = 0; c < Dp; ++c) o[r * Dp + c] *= inv;
    lse_out[r] = l[r] > 0 ? m[r] + std::log(l[r]) : -INFINITY;
  }
}

// Merges `nsplit` pieces (o at stride `o_stride`, lse at stride `lse_stride`) with the sink and
// writes the rows of out (dtype T) and lse.
template <typename T>
void write_rows(const Problem& pb, const Item& it, const float* o, int64_t o_stride,
                const float* lse_part, int64_t lse_stride, int64_t nsplit, T* out, float* lse) {
  const int64_t bq = it.i1 - it.i0, D = pb.D, Dp = pb.Dp;
  const Layout ol = pb.q_layout(D), ll = pb.q_layout(1);
  std::vector<float> acc(D);
  for (int64_t g = 0; g < pb.G; ++g) {
    const int64_t h = it.h * pb.G + g;
    const float sink = pb.sinks ? pb.sinks[h] : -INFINITY;
    for (int64_t i = 0; i < bq; ++i) {
      const int64_t r = g * bq + i;
      float mx = sink;
      for (int64_t sp = 0; sp < nsplit; ++sp) mx = std::max(mx, lse_part[sp * lse_stride + r]);
      T* dst = out + ol.at(it.n, h, it.i0 + i);
      float* lse_dst = lse + ll.at(it.n, h, it.i0 + i);
      if (mx == -INFINITY) {  // no visible key and no sink: zeros, lse = -inf
        std::fill(dst, dst + D, static_cast<T>(0.0f));
        *lse_dst = -INFINITY;
        continue;
      }
      float total = sink == -INFINITY ? 0.0f : std::exp(sink - mx);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t sp = 0; sp < nsplit; ++sp) {
        const float w = std::exp(lse_part[sp * lse_stride + r] - mx);
        total += w;
        const float* src = o + sp * o_stride + r * Dp;
        for (int64_t c = 0; c < D; ++c) acc[c] += w * src[c];
      }
      for (int64_t c = 0; c < D; ++c) dst[c] = static_cast<T>(acc[c] / total);
      *lse_dst = mx + std::log(total);
    }
  }
}

template <typename T>
void forward(const Problem& pb, const T* q, const T* k, const T* v, T* out, float* lse) {
  // Pieces: (sequence, query block, kv head), the key range split when there are too few
  // pieces to keep every thread busy (decode: one query row, thousands of keys).
  // Half-height blocks under a narrow window cut the keys computed but hidden from 50% to 33%.
  const int64_t rows = narrow_window(pb) ? kTileRows / 2 : kTileRows;
  const int64_t bq = std::max<int64_t>(1, rows / pb.G);
  // The split depends on the problem only, never on at::get_num_threads(): a call inside
  // torch.set_num_threads(1) or a DataLoader worker returns the same bits as one on all cores.
  // kSplitItems (16 threads' worth of 4 items) keeps up to 16 cores busy on a decode step.
  constexpr int64_t kSplitItems = 64;
  int64_t base_items = 0;
  for (int64_t n = 0; n < pb.nseq; ++n) base_items += (pb.len_q[n] + bq - 1) / bq * pb.Hkv;
  const int64_t want_split =
      base_items >= kSplitItems ? 1 : (kSplitItems + base_items - 1) / std::max<int64_t>(base_items, 1);
  std::vector<Item> items;
  std::vector<std::pair<int64_t, int64_t>> groups;  // (first item, number of splits)
  for (int64_t n = 0; n < pb.nseq; ++n) {
    const int64_t shift = pb.len_k[n] - pb.len_q[n];
    for (int64_t i0 = 0; i0 < pb.len_q[n]; i0 += bq) {
      const int64_t i1 = std::min(i0 + bq, pb.len_q[n]);
      const auto [lo, hi] = pb.band.keys(i0 + shift, i1 + shift, pb.len_k[n]);
      const int64_t blocks = (hi - lo + kTileKeys - 1) / kTileKeys;
      const int64_t nsplit = std::max<int64_t>(1, std::min(want_split, blocks));
      const int64_t per = (blocks + nsplit - 1) / std::max<int64_t>(nsplit, 1) * kTileKeys;
      for (int64_t h = 0; h < pb.Hkv; ++h) {
        groups.emplace_back(items.size(), nsplit);
        for (int64_t sp = 0; sp < nsplit; ++sp)
          items.push_back({n, h, i0, i1, std::min(hi, lo + sp * per), std::min(hi, lo + (sp + 1) * per)});
      }
    }
  }
  const int64_t M = pb.G * bq;
  const bool split = items.size() > groups.size();
  // Convert K/V once when tiles are reused by several query blocks and are not already fp32
  // rows of Dp values.
  int64_t q_blocks = 0;
  for (int64_t n = 0; n < pb.nseq; ++n) q_blocks = std::max(q_blocks, (pb.len_q[n] + bq - 1) / bq);
  // bf16 on AVX512_BF16 keeps K and V in bf16 (attention_bf16_cpu.cpp).
  constexpr bool is_bf16 = std::is_same_v<T, c10::BFloat16>;
  const bool bf16_dot = is_bf16 && use_avx512_bf16();
  const bool pack = !bf16_dot && q_blocks > 1 && !(std::is_same_v<T, float> && pb.D == pb.Dp);
  const PackedKV packed = pack ? pack_kv(pb, k, v) : PackedKV{};
  const PackedKV* pk = pack ? &packed : nullptr;
  const ColsKernels* cols = cols_kernels();
  const auto run = [&](const Item& it, float* o, float* l) {
#if GPTCORE_X86
    if constexpr (is_bf16) {
      if (bf16_dot) return run_item_bf16(pb, it.n, it.h, it.i0, it.i1, it.k0, it.k1, q, k, v, o, l);
    }
    // Pieces of at least one vector of rows (16 on AVX-512, 8 on AVX2) run in column layout
    // (attention_cols_cpu.cpp).
    if (cols && pb.G * (it.i1 - it.i0) >= cols->lanes)
      return run_item_cols(*cols, pb, it.n, it.h, it.i0, it.i1, it.k0, it.k1, q, k, v, pk, o, l);
#endif
    run_item(pb, it, q, k, v, pk, o, l);
  };
  std::vector<float> part_o(split ? items.size() * M * pb.Dp : 0), part_lse(split ? items.size() * M : 0);
  if (split) {
    parallel_items(items.size(), [&](int64_t i) {
      run(items[i], part_o.data() + i * M * pb.Dp, part_lse.data() + i * M);
    });
  }
  parallel_items(groups.size(), [&](int64_t gi) {
    const auto [first, nsplit] = groups[gi];
    if (split) {
      write_rows(pb, items[first], part_o.data() + first * M * pb.Dp, M * pb.Dp,
                 part_lse.data() + first * M, M, nsplit, out, lse);
      return;
    }
    std::vector<float> o(M * pb.Dp), l(M);
    run(items[first], o.data(), l.data());
    write_rows(pb, items[first], o.data(), 0, l.data(), 0, 1, out, lse);
  });
}

std::tuple<at::Tensor, at::Tensor> run_forward(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor* cu_q,
                                               const at::Tensor* cu_k,
                                               const c10::optional<at::Tensor>& sinks,
                                               double scale, int64_t left, int64_t right,
                                               double softcap) {
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                   "gptcore.attention: q, k, v must share a dtype, got ", q.scalar_type(), ", ",
                   k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), "gptcore.attention: k and v shapes differ: ",
                    k.sizes(), " vs ", v.sizes());
  const at::Tensor qc = unit_rows(q);
  const auto [kc, vc] = shared_rows(k, v);
  c10::optional<at::Tensor> sf;
  if (sinks.has_value()) sf = sinks->to(at::kFloat).contiguous();
  const Problem pb = make_problem(qc, kc, cu_q, cu_k, sf, scale, left, right, softcap);
  TORCH_CHECK_VALUE(!sf.has_value() || sf->numel() == pb.Hq, "gptcore.attention: sinks must have ",
                    pb.Hq, " values, got ", sf->numel());
  at::Tensor out = at::empty(qc.sizes(), qc.options());
  auto lse_sizes = qc.sizes().vec();
  lse_sizes.pop_back();
  at::Tensor lse = at::empty(lse_sizes, qc.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse};  // no query rows (B, Hq or every Sq is 0)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "attention_fwd", [&] {
    forward<scalar_t>(pb, qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
                      out.data_ptr<scalar_t>(), lse.data_ptr<float>());
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const c10::optional<at::Tensor>& sinks,
                                                     double scale, int64_t left, int64_t right,
                                                     double softcap) {
  checks::attention_inputs("attention_fwd", q, k, v, sinks, 4);
  if (onednn_attention_applies(q, k, sinks, left, right, softcap))
    return onednn_attention_fwd(q, k, v, scale, right == 0);
  return run_forward(q, k, v, nullptr, nullptr, sinks, scale, left, right, softcap);
}

std::tuple<at::Tensor, at::Tensor> attention_varlen_fwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_q,
    const at::Tensor& cu_k, int64_t, int64_t, const c10::optional<at::Tensor>& sinks, double scale,
    int64_t left, int64_t right, double softcap) {
  checks::attention_inputs("attention_varlen_fwd", q, k, v, sinks, 3);
  checks::integral("attention_varlen_fwd", "cu_seqlens_q", cu_q, 1);
  checks::integral("attention_varlen_fwd", "cu_seqlens_k", cu_k, 1);
  return run_forward(q, k, v, &cu_q, &cu_k, sinks, scale, left, right, softcap);
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("attention_fwd", &attention_fwd_cpu);
  m.impl("attention_varlen_fwd", &attention_varlen_fwd_cpu);
}

}  // namespace gptcore::attn
