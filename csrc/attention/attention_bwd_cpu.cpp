// Attention backward on CPU, flash-attention-2 style (Dao 2023): P is recomputed from the saved
// log-sum-exp, Delta = rowsum(dO * O) - dlse. A work item owns a chunk of key blocks of one
// (sequence, kv head), so dK and dV need no atomics; each chunk adds its dQ into its own fp32
// slice, and the slices are summed in a fixed order afterwards: the result is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "attention_bwd_tiles.h"
#include "attention_common.h"
#include "attention_onednn.h"
#include "checks.h"

namespace gptcore::attn {
namespace {

// Keys per backward tile and rows (G x query positions) per Q tile, chosen by cache budget
// (not tuned): the ten 64 x 64 fp32 tiles (S, dP, softcap slopes, Q, dO, K, K^T, V^T, dK,
// dV at D=64) take 160 KB, inside a 512 KB L2.
constexpr int64_t kBwdKeys = 64;
constexpr int64_t kBwdRows = 64;
// Rows (or keys) per strip of a masked tile: two of the 6-row register tiles.
constexpr int64_t kStrip = 12;

struct Chunk {
  int64_t n, h, c, j0, j1;  // sequence, kv head, chunk index, key range
};

struct Grads {
  const float* lse;
  const float* delta;
  float* dq_part;       // per chunk, a q-shaped fp32 partial dQ with Dp per row (unscaled)
  int64_t part_stride;  // elements per chunk slice
};

// Our register-tile product at the active ISA level (attention_bwd_tiles.h).
BwdGemm bwd_gemm() {
#if GPTCORE_X86
  if (use_avx512()) return bwd_gemm_avx512;
  if (use_avx2()) return bwd_gemm_avx2;
#endif
  return bwd_gemm_portable;
}

// dst (D x ld) = the first D values of `rows` rows of src (row stride `stride`), transposed;
// columns rows..ld are zero.
template <typename T>
void pack_cols(const T* src, int64_t stride, int64_t rows, int64_t D, int64_t ld, float* dst) {
  for (int64_t d = 0; d < D; ++d) std::fill(dst + d * ld + rows, dst + (d + 1) * ld, 0.0f);
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t d = 0; d < D; ++d) dst[d * ld + j] = static_cast<float>(src[j * stride + d]);
}

template <typename T>
void run_chunk(const Problem& pb, const Chunk& ch, const T* dout, const T* q, const T* k,
               const T* v, const Grads& gr, T* dk, T* dv) {
  const int64_t D = pb.D, Dp = pb.Dp, G = pb.G;
  const int64_t bq = std::max<int64_t>(1, kBwdRows / G), Mmax = G * bq;
  const int64_t BKp = round_up(kBwdKeys, kPanel);
  const Layout &ql = pb.q_in, &kvl = pb.kv_in, &dol = pb.dout_in, kvo = pb.kv_layout(D),
               ll = pb.q_layout(1), pl = pb.q_layout(Dp);
  const int64_t Lq = pb.len_q[ch.n], shift = pb.len_k[ch.n] - Lq;
  const BwdGemm gemm = bwd_gemm();
  // K (keys x Dp) for dQ, K^T and V^T (D x BKp) for S and dP: B operands of the tiles.
  // Kept per thread: a short sequence runs many chunks, each would allocate them again.
  thread_local std::vector<float> krow, kt, vt, dk_acc, dv_acc, qs, dos, s, dp, slope, lse_r,
      delta_r;
  const std::pair<std::vector<float>*, int64_t> sizes[] = {
      {&krow, kBwdKeys * Dp}, {&kt, D * BKp},        {&vt, D * BKp},   {&dk_acc, kBwdKeys * Dp},
      {&dv_acc, kBwdKeys * Dp}, {&qs, Mmax * Dp},     {&dos, Mmax * Dp}, {&s, Mmax * BKp},
      {&dp, Mmax * BKp}, {&slope, pb.softcap > 0 ? Mmax * BKp : 0}, {&lse_r, Mmax},
      {&delta_r, Mmax}};
  for (const auto& [buf, size] : sizes) buf->resize(size);
  float* dq_part = gr.dq_part + ch.c * gr.part_stride;
  for (int64_t j0 = ch.j0; j0 < ch.j1; j0 += kBwdKeys) {
    const int64_t nk = std::min(kBwdKeys, ch.j1 - j0);
    pack_rows(k + kvl.at(ch.n, ch.h, j0), kvl.row, nk, D, Dp, 1.0f, krow.data());
    pack_cols(k + kvl.at(ch.n, ch.h, j0), kvl.row, nk, D, BKp, kt.data());
    pack_cols(v + kvl.at(ch.n, ch.h, j0), kvl.row, nk, D, BKp, vt.data());
    std::fill(dk_acc.begin(), dk_acc.end(), 0.0f);
    std::fill(dv_acc.begin(), dv_acc.end(), 0.0f);
    const auto [p_lo, p_hi] = pb.band.positions(j0, j0 + nk, shift, shift + Lq);
    for (int64_t i0 = p_lo - shift; i0 < p_hi - shift; i0 += bq) {
      const int64_t i1 = std::min(i0 + bq, p_hi - shift), rows = i1 - i0, M = G * rows;
      const AttentionKernels& ker = kernels();
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = ch.h * G + g;
        pack_rows(q + ql.at(ch.n, h, i0), ql.row, rows, D, Dp, pb.scale, qs.data() + g * rows * Dp);
        pack_rows(dout + dol.at(ch.n, h, i0), dol.row, rows, D, Dp, 1.0f, dos.data() + g * rows * Dp);
        for (int64_t i = 0; i < rows; ++i) {
          lse_r[g * rows + i] = gr.lse[ll.at(ch.n, h, i0 + i)];
          delta_r[g * rows + i] = gr.delta[ll.at(ch.n, h, i0 + i)];
        }
      }
      // Diagonal and window-edge tiles (masked) work in strips of kStrip rows (or keys): each
      // computes only the 16-column span of keys its rows may see, and the products sum only
      // over visible pairs (P and dS are exactly 0 elsewhere): half of a causal diagonal tile.
      const bool masked = !pb.band.all_visible(i0 + shift, i1 + shift, j0, j0 + nk);
      const auto visible = [&](int64_t r0, int64_t r1) {  // keys rows [r0, r1) may see, in [0, nk]
        if (!masked) return std::pair<int64_t, int64_t>{0, nk};
        const auto [lo, hi] = pb.band.keys(i0 + shift + r0, i0 + shift + r1, pb.len_k[ch.n]);
        const int64_t l = std::clamp<int64_t>(lo - j0, 0, nk);
        return std::pair<int64_t, int64_t>{l, std::clamp<int64_t>(hi - j0, l, nk)};
      };
      const int64_t strip = masked ? kStrip : rows;  // rows per strip of one head
      for (int64_t g = 0; g < (masked ? G : 1); ++g)  // S = Qs K^T, dP = dO V^T
        for (int64_t r0 = 0; r0 < (masked ? rows : M); r0 += masked ? kStrip : M) {
          const int64_t r1 = masked ? std::min(r0 + kStrip, rows) : M, row = g * rows + r0;
          const auto [lo, hi] = visible(r0, r1);
          const int64_t c0 = lo / 16 * 16, c1 = round_up(hi, 16);
          if (c1 <= c0) continue;
          gemm(r1 - r0, c1 - c0, D, qs.data() + row * Dp, Dp, 1, kt.data() + c0, BKp,
               s.data() + row * BKp + c0, BKp, false);
          gemm(r1 - r0, c1 - c0, D, dos.data() + row * Dp, Dp, 1, vt.data() + c0, BKp,
               dp.data() + row * BKp + c0, BKp, false);
        }
      if (pb.softcap > 0) {
        apply_softcap(s.data(), BKp, M, nk, pb.softcap);
        for (int64_t r = 0; r < M; ++r)  // d(c tanh(x / c))/dx = 1 - (s / c)^2
          for (int64_t j = 0; j < nk; ++j) {
            const float t = s[r * BKp + j] / pb.softcap;
            slope[r * BKp + j] = 1.0f - t * t;
          }
      }
      for (int64_t r = 0; r < M; ++r) {
        float* prow = s.data() + r * BKp;
        float* dsrow = dp.data() + r * BKp;
        auto [lo, hi] = visible(r % rows, r % rows + 1);
        if (lse_r[r] == -INFINITY) hi = lo;  // the row saw nothing: P = 0, no gradient
        std::fill(prow, prow + lo, 0.0f);
        std::fill(dsrow, dsrow + lo, 0.0f);
        std::fill(prow + hi, prow + nk, 0.0f);
        std::fill(dsrow + hi, dsrow + nk, 0.0f);
        if (hi == lo) continue;
        ker.exp_row(prow + lo, hi - lo, lse_r[r]);                        // P = exp(S - lse)
        ker.ds_row(prow + lo, dsrow + lo, hi - lo, delta_r[r]);           // dS = P (dP - Delta)
        if (pb.softcap > 0)
          for (int64_t j = lo; j < hi; ++j) dsrow[j] *= slope[r * BKp + j];
      }
      // dV += P^T dO, dK += dS^T Qs: P^T and dS^T are read in place, A(j, r) = s[r * BKp + j].
      if (!masked) {
        gemm(nk, Dp, M, s.data(), 1, BKp, dos.data(), Dp, dv_acc.data(), Dp, true);
        gemm(nk, Dp, M, dp.data(), 1, BKp, qs.data(), Dp, dk_acc.data(), Dp, true);
      } else {
        for (int64_t ja = 0; ja < nk; ja += kStrip) {
          const int64_t jb = std::min(ja + kStrip, nk);
          const auto [pa, pz] = pb.band.positions(j0 + ja, j0 + jb, i0 + shift, i1 + shift);
          for (int64_t g = 0; g < G && pz > pa; ++g) {
            const int64_t row = g * rows + pa - i0 - shift;
            gemm(jb - ja, Dp, pz - pa, s.data() + row * BKp + ja, 1, BKp, dos.data() + row * Dp,
                 Dp, dv_acc.data() + ja * Dp, Dp, true);
            gemm(jb - ja, Dp, pz - pa, dp.data() + row * BKp + ja, 1, BKp, qs.data() + row * Dp,
                 Dp, dk_acc.data() + ja * Dp, Dp, true);
          }
        }
      }
      for (int64_t g = 0; g < G; ++g)  // dQ += dS K
        for (int64_t r0 = 0; r0 < rows; r0 += strip) {
          const int64_t r1 = std::min(r0 + strip, rows);
          const auto [lo, hi] = visible(r0, r1);
          if (hi > lo)
            gemm(r1 - r0, Dp, hi - lo, dp.data() + (g * rows + r0) * BKp + lo, BKp, 1,
                 krow.data() + lo * Dp, Dp, dq_part + pl.at(ch.n, ch.h * G + g, i0 + r0), pl.row,
                 true);
        }
    }
    for (int64_t j = 0; j < nk; ++j) {
      T* dkr = dk + kvo.at(ch.n, ch.h, j0 + j);
      T* dvr = dv + kvo.at(ch.n, ch.h, j0 + j);
      for (int64_t c = 0; c < D; ++c) {
        dkr[c] = static_cast<T>(dk_acc[j * Dp + c]);
        dvr[c] = static_cast<T>(dv_acc[j * Dp + c]);
      }
    }
  }
}

template <typename T>
void backward(const Problem& pb, const T* dout, const float* dlse, const T* q, const T* k,
              const T* v, const T* out, const float* lse, T* dq, T* dk, T* dv, float* dsinks,
              int64_t q_rows) {
  const int64_t D = pb.D, Dp = pb.Dp;
  const Layout ql = pb.q_layout(D), ll = pb.q_layout(1), pl = pb.q_layout(Dp);
  std::vector<float> delta(q_rows * pb.Hq);
  parallel_items(pb.nseq * pb.Hq, [&](int64_t item) {  // Delta = rowsum(dO * O) - dlse
    const int64_t n = item / pb.Hq, h = item % pb.Hq;
    for (int64_t i = 0; i < pb.len_q[n]; ++i) {
      const T* o = out + ql.at(n, h, i);
      const T* d = dout + pb.dout_in.at(n, h, i);
      // 16 partial sums in a fixed order: the compiler vectorises them, where one running sum
      // would be a chain of dependent adds (a tenth of the backward at S = 64).
      float part[16] = {};
      int64_t c = 0;
      for (; c + 16 <= D; c += 16)
        for (int u = 0; u < 16; ++u)
          part[u] += static_cast<float>(o[c + u]) * static_cast<float>(d[c + u]);
      for (; c < D; ++c) part[c % 16] += static_cast<float>(o[c]) * static_cast<float>(d[c]);
      float acc = 0.0f;
      for (int u = 0; u < 16; ++u) acc += part[u];
      delta[ll.at(n, h, i)] = acc - dlse[ll.at(n, h, i)];
    }
  });
  if (dsinks != nullptr) {  // dsink_h = -sum over rows of exp(sink_h - lse) * Delta
    for (int64_t h = 0; h < pb.Hq; ++h) {
      double acc = 0.0;
      for (int64_t n = 0; n < pb.nseq; ++n)
        for (int64_t i = 0; i < pb.len_q[n]; ++i) {
          const float l = lse[ll.at(n, h, i)];
          if (l != -INFINITY) acc += std::exp(pb.sinks[h] - l) * delta[ll.at(n, h, i)];
        }
      dsinks[h] = static_cast<float>(-acc);
    }
  }
  // Chunks of key blocks: one per (sequence, kv head) when that already gives every thread
  // several items, else the key blocks are split so that both cores work on one long sequence.
  const int64_t threads = at::get_num_threads(), base = pb.nseq * pb.Hkv;
  const int64_t want = base >= 4 * threads ? 1 : (4 * threads + base - 1) / std::max<int64_t>(base, 1);
  std::vector<Chunk> chunks;
  int64_t nslices = 1;
  for (int64_t n = 0; n < pb.nseq; ++n) {
    const int64_t blocks = (pb.len_k[n] + kBwdKeys - 1) / kBwdKeys;
    const int64_t nc = std::min(want, blocks);
    if (nc == 0) continue;
    nslices = std::max(nslices, nc);
    const int64_t per = (blocks + nc - 1) / nc * kBwdKeys;
    for (int64_t h = 0; h < pb.Hkv; ++h)
      for (int64_t c = 0; c < nc; ++c)
        chunks.push_back({n, h, c, std::min(pb.len_k[n], c * per), std::min(pb.len_k[n], (c + 1) * per)});
  }
  const int64_t part_stride = q_rows * pb.Hq * Dp;
  std::vector<float> dq_part(nslices * part_stride, 0.0f);
  const Grads gr{lse, delta.data(), dq_part.data(), part_stride};
  parallel_items(chunks.size(), [&](int64_t c) {
    run_chunk(pb, chunks[c], dout, q, k, v, gr, dk, dv);
  });
  parallel_items(pb.nseq * pb.Hq, [&](int64_t item) {  // dQ = scale * (sum of slices, in order)
    const int64_t n = item / pb.Hq, h = item % pb.Hq;
    std::vector<float> acc(D);
    for (int64_t i = 0; i < pb.len_q[n]; ++i) {
      // slice by slice over a whole row: contiguous loops the compiler vectorises
      const float* part = dq_part.data() + pl.at(n, h, i);
      std::copy(part, part + D, acc.begin());
      for (int64_t sl = 1; sl < nslices; ++sl)
        for (int64_t c = 0; c < D; ++c) acc[c] += part[sl * part_stride + c];
      T* dst = dq + ql.at(n, h, i);
      for (int64_t c = 0; c < D; ++c) dst[c] = static_cast<T>(acc[c] * pb.scale);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_backward(
    const at::Tensor& dout, const at::Tensor& dlse, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor* cu_q, const at::Tensor* cu_k, const at::Tensor& out,
    const at::Tensor& lse, const c10::optional<at::Tensor>& sinks, double scale, int64_t left,
    int64_t right, double softcap) {
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() &&
                       q.scalar_type() == out.scalar_type(),
                   "gptcore.attention backward: q, k, v, out must share a dtype, got ",
                   q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type(), ", ",
                   out.scalar_type());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes() && out.sizes() == q.sizes() && dout.sizes() == q.sizes(),
                    "gptcore.attention backward: shapes disagree: q ", q.sizes(), ", k ",
                    k.sizes(), ", v ", v.sizes(), ", out ", out.sizes(), ", dout ", dout.sizes());
  auto lse_sizes = q.sizes().vec();
  lse_sizes.pop_back();
  TORCH_CHECK_VALUE(lse.sizes() == lse_sizes && dlse.sizes() == lse_sizes,
                    "gptcore.attention backward: lse and dlse must have shape ", lse_sizes,
                    ", got ", lse.sizes(), " and ", dlse.sizes());
  const at::Tensor qc = unit_rows(q), oc = out.contiguous(),
                   doc = unit_rows(dout.to(q.scalar_type())),
                   lc = lse.to(at::kFloat).contiguous(), dlc = dlse.to(at::kFloat).contiguous();
  c10::optional<at::Tensor> sf;
  if (sinks.has_value()) sf = sinks->to(at::kFloat).contiguous();
  const auto [kc, vc] = shared_rows(k, v);
  Problem pb = make_problem(qc, kc, cu_q, cu_k, sf, scale, left, right, softcap);
  pb.dout_in = pb.strided(doc, true);
  TORCH_CHECK_VALUE(!sf.has_value() || sf->numel() == pb.Hq, "gptcore.attention: sinks must have ",
                    pb.Hq, " values, got ", sf->numel());
  // Dense dK and dV are written whole by the key chunks; packed rows outside every sequence
  // (past cu_seqlens_k[-1]) are not, and get zero gradients.
  const auto grad_kv = [&](const at::Tensor& t) {
    return pb.dense && q.numel() > 0 ? at::empty(t.sizes(), t.options())
                                     : at::zeros(t.sizes(), t.options());
  };
  at::Tensor dq = at::empty(qc.sizes(), qc.options()), dk = grad_kv(kc), dv = grad_kv(vc);
  at::Tensor dsinks = at::zeros({sf.has_value() ? pb.Hq : 0}, qc.options().dtype(at::kFloat));
  if (q.numel() == 0) {  // no query rows: nothing reads k, v or the sinks
    return {dq, dk, dv, sinks.has_value() ? dsinks.to(sinks->scalar_type()) : q.new_empty({0})};
  }
  const int64_t q_rows = pb.dense ? pb.nseq * (pb.nseq ? pb.len_q[0] : 0) : q.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "attention_bwd", [&] {
    backward<scalar_t>(pb, doc.data_ptr<scalar_t>(), dlc.data_ptr<float>(), qc.data_ptr<scalar_t>(),
                       kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(), oc.data_ptr<scalar_t>(),
                       lc.data_ptr<float>(), dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(),
                       dv.data_ptr<scalar_t>(), sf.has_value() ? dsinks.data_ptr<float>() : nullptr,
                       q_rows);
  });
  if (sinks.has_value()) dsinks = dsinks.to(sinks->scalar_type());
  else dsinks = q.new_empty({0});
  return {dq, dk, dv, dsinks};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& dlse, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const c10::optional<at::Tensor>& sinks, double scale, int64_t left, int64_t right,
    double softcap) {
  checks::attention_inputs("attention_bwd", q, k, v, sinks, 4);
  checks::attention_grads("attention_bwd", q, out, dout, lse, dlse);
  // torch's backward takes no gradient of lse: only calls that did not use it go there
  if (onednn_attention_applies(q, k, sinks, left, right, softcap) && !dlse.any().item<bool>()) {
    auto [dq, dk, dv] = onednn_attention_bwd(dout, q, k, v, out, lse, scale, right == 0);
    return {dq, dk, dv, q.new_empty({0})};
  }
  return run_backward(dout, dlse, q, k, v, nullptr, nullptr, out, lse, sinks, scale, left, right,
                      softcap);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_varlen_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& dlse, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& cu_q, const at::Tensor& cu_k, int64_t, int64_t,
    const at::Tensor& out, const at::Tensor& lse, const c10::optional<at::Tensor>& sinks,
    double scale, int64_t left, int64_t right, double softcap) {
  checks::attention_inputs("attention_varlen_bwd", q, k, v, sinks, 3);
  checks::attention_grads("attention_varlen_bwd", q, out, dout, lse, dlse);
  checks::integral("attention_varlen_bwd", "cu_seqlens_q", cu_q, 1);
  checks::integral("attention_varlen_bwd", "cu_seqlens_k", cu_k, 1);
  return run_backward(dout, dlse, q, k, v, &cu_q, &cu_k, out, lse, sinks, scale, left, right,
                      softcap);
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("attention_bwd", &attention_bwd_cpu);
  m.impl("attention_varlen_bwd", &attention_varlen_bwd_cpu);
}

}  // namespace gptcore::attn
