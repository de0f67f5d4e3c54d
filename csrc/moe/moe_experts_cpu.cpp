// MoE experts forward on CPU, float (fp32/bf16/fp16) or MXFP4 weights: grouped GEMMs over the
// dispatch index (moe_index.h), ScatterMoE-style (rows gathered by index, no padded copy of x).
//   stage 1, items (expert, I-column tile): fp32 weight tile (converted once, cache-sized),
//            h = x_e @ [gate; up]^T + b over row blocks, a = GLU(h) -> A (N, I)
//   stage 2, items (expert, H-column tile): o = (A_e @ down^T + b) * routing weight -> O (N, H)
//   combine: y[t] = sum_j O[slot (t, j)] in slot order (deterministic, no atomics)
// Column tiles keep both cores busy at every T: at T=1 (two experts, weight-bandwidth bound)
// each thread streams its own share of the weight columns.
// Experts with many rows (whole_expert) skip the tiles: one at::mm per projection over all the
// expert's rows (MKL sgemm, or oneDNN's bf16 kernels when x and the weights are bf16), both
// threads inside each call.
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/silu.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "cpu_features.h"
#include "f32_rows.h"
#include "parallel.h"
#include "moe_bf16.h"
#include "moe_experts.h"
#include "moe_kernels.h"

namespace gptcore {
namespace {

// Tile sizes. With few rows per expert a tile of weight rows is about kTileFloats floats
// (128 KB, stays in L2 while converted and read) and narrow tiles give both threads work.
// With many rows each sgemm call must be wide: MKL packs the activation block on every call,
// which with 16-column tiles cost as much as the multiply; 8x wider tiles amortise it
// (docs/cpu-isa.md, "Measurements behind the code").
constexpr int64_t kTileFloats = 32 * 1024;
constexpr int64_t kWideTileFloats = 8 * kTileFloats;
constexpr int64_t kWideFromRows = 16;
constexpr int64_t kRowBlock = 256;

// K-major panels are read row by row, w floats per row of the reduction: narrow ones defeat
// the prefetcher (16 columns = 64 B per 8 KB stride); 256 columns read about as fast as the
// contiguous layout (docs/cpu-isa.md, "Measurements behind the code").
constexpr int64_t kKmajorWidth = 256;

int64_t tile_width(int64_t rows_per_col, int64_t cols, int64_t total, int64_t max_rows,
                   bool kmajor) {
  const int64_t floats = max_rows >= kWideFromRows ? kWideTileFloats : kTileFloats;
  const int64_t w = std::max<int64_t>(kmajor ? kKmajorWidth : 8, floats / (rows_per_col * cols));
  return std::min(w, total);
}

}  // namespace

// Experts with at most this many rows use the fused MXFP4 kernels: writing a dequantised fp32
// tile for sgemm to read back doubles the work of decoding, and the fused kernels decode each
// weight block once per register block of activation rows. With AVX-512 they stay ahead of the
// tiles up to 64 rows, by a margin that narrows as rows grow; with AVX2 (8-wide, costlier decode)
// up to 16 rows, and lose from 32. fp32 experts with at most kSmallRowsF32* rows take the
// register blocks of f32_rows.h instead of sgemm on the same tiles: AVX-512 up to 64 rows per
// expert, AVX2 up to 32 (at 64 even with sgemm), and with K-major weights up to 2 (from 3 rows
// its 16-column strips read the weight rows in 64-byte pieces and lose to sgemm). All:
// docs/cpu-isa.md, "Measurements behind the code".
constexpr int64_t kFusedRowsAvx512 = 64;
constexpr int64_t kFusedRowsAvx2 = 16;
constexpr int64_t kSmallRowsF32Avx512 = 64;
constexpr int64_t kSmallRowsF32Avx2 = 32;
constexpr int64_t kSmallRowsF32KmajorAvx2 = 2;

const ExpertKernels& expert_kernels() {
  static const ExpertKernels portable{0, nullptr, 0, 0, nullptr, nullptr};
#if GPTCORE_X86
  static const ExpertKernels avx2{kFusedRowsAvx2,          mxfp4_matmul_avx2,
                                  kSmallRowsF32Avx2,       kSmallRowsF32KmajorAvx2,
                                  f32_rows_nt_avx2,        f32_rows_nn_avx2};
  static const ExpertKernels avx512{kFusedRowsAvx512,    mxfp4_matmul_avx512,
                                    kSmallRowsF32Avx512, kSmallRowsF32Avx512,
                                    f32_rows_nt_avx512,  f32_rows_nn_avx512};
  if (use_avx512()) return avx512;
  if (use_avx2()) return avx2;
#endif
  return portable;
}

namespace {

// Whether expert e's rows go through the fused MXFP4 kernel (their activations then are permuted).
bool fused_mxfp4(const WeightRows& w, int64_t rows) {
  return w.kind == WeightRows::Kind::kMXFP4 && rows <= expert_kernels().mxfp4_max_rows;
}

// out[i * ldo + r] = sum_c W[r0 + r, c] * x_i[c] for r < n, i < nx: the fused MXFP4 product of
// the active ISA on `w`'s rows [r0, r0 + n) (x rows permuted, see mxfp4_permute_row).
void fused_mxfp4_product(const WeightRows& w, int64_t r0, int64_t n, const float* x,
                         int64_t ldx, int64_t nx, float* out, int64_t ldo) {
  const int64_t K = w.cols;
  const auto* blocks = static_cast<const uint8_t*>(w.data) + r0 * K / 2;
  const uint8_t* scales = w.scales + r0 * K / 32;
  expert_kernels().mxfp4(blocks, scales, n, K, x, ldx, nx, out, ldo);
}

bool small_f32(const WeightRows& w, bool kmajor, int64_t rows) {
  const ExpertKernels& kernels = expert_kernels();
  return w.kind == WeightRows::Kind::kF32 &&
         rows <= (kmajor ? kernels.f32_kmajor_max_rows : kernels.f32_max_rows);
}

// out (rows, m; ldo) = x (rows, K; ldx) times the weights: `w` holds m rows of K (ld), or a
// K-major (K, m) panel. `small`: the small-row kernels of the active level, else sgemm.
void weight_product(bool kmajor, bool small, int64_t rows, int64_t m, int64_t K, const float* x,
                    int64_t ldx, const float* w, int64_t ld, float* out, int64_t ldo) {
  if (small) {
    const ExpertKernels& kernels = expert_kernels();
    (kmajor ? kernels.f32_nn : kernels.f32_nt)(rows, m, K, x, ldx, w, ld, out, ldo);
    return;
  }
  (kmajor ? gemm_nn : gemm_nt)(rows, m, K, x, ldx, w, ld, 0.0f, out, ldo);
}

struct Problem {
  int64_t T, k, H, I, E;
  Activation act;
  float alpha, limit;
  WeightRows gate_up, down;  // rows of (E * 2I, H) and (E * H, I), or K-major:
  bool gate_up_kmajor, down_kmajor;  // rows of (E * H, 2I) and (E * I, H) (kmajor_weights)
  const float* gate_up_bias; // (E, 2I) or null
  const float* down_bias;    // (E, H) or null
  at::Tensor gate_up_w, down_w;  // the float weights (E, 2I, H), (E, H, I); undefined for MXFP4
};

// Items of one stage: (expert, first column) pairs over the experts that have tokens.
// Experts marked in `whole` are skipped (whole_expert computes them).
std::vector<std::pair<int64_t, int64_t>> tiles(const Dispatch& d, int64_t E, int64_t cols,
                                               int64_t width, const std::vector<char>& whole) {
  std::vector<std::pair<int64_t, int64_t>> items;
  for (int64_t e = 0; e < E; ++e) {
    if (d.count(e) == 0 || whole[e]) continue;
    for (int64_t c = 0; c < cols; c += width) items.emplace_back(e, c);
  }
  return items;
}

// Stage 1 for expert e, activation columns [c0, c0 + w): A[rows of e, c0:c0+w].
void gate_up_tile(const Problem& p, const Dispatch& d, const float* xg, int64_t e, int64_t c0,
                  int64_t w, float* A, float* scratch) {
  const int64_t H = p.H, I = p.I;
  float* wtile = scratch;                  // (2w, H) fp32 weight rows when converted
  float* h = scratch + 2 * w * H;          // (kRowBlock, 2w) pre-activations
  float* bias = h + kRowBlock * 2 * w;     // (2w,) bias in h's column layout
  const int64_t base = e * 2 * I;
  const int64_t first = d.offsets[e], n = d.count(e);
  const bool fused = fused_mxfp4(p.gate_up, n);
  const float *wa = nullptr, *wb = nullptr;  // weight rows of h's two column halves
  int64_t ld = H;                            // their row stride
  const bool kmajor = !fused && p.gate_up_kmajor;  // wa, wb are (H, w) panels
  if (kmajor && p.act == Activation::kGptOss) {
    wa = p.gate_up.columns(e * H, H, 2 * c0, 2 * w, wtile, &ld);
    wb = wa + w;
  } else if (kmajor) {
    wa = p.gate_up.columns(e * H, H, c0, w, wtile, &ld);
    wb = p.gate_up.columns(e * H, H, I + c0, w, wtile + w * H, &ld);
  } else if (!fused && p.act == Activation::kGptOss) {  // interleaved gate/up: one block of 2w rows
    wa = p.gate_up.rows(base + 2 * c0, 2 * w, wtile);
    wb = wa + w * H;
  } else if (!fused) {
    wa = p.gate_up.rows(base + c0, w, wtile);
    wb = p.gate_up.rows(base + I + c0, w, wtile + w * H);
  }
  if (p.gate_up_bias) {
    const float* b = p.gate_up_bias + base;
    for (int64_t c = 0; c < w; ++c) {
      if (p.act == Activation::kGptOss) {
        bias[2 * c] = b[2 * (c0 + c)];
        bias[2 * c + 1] = b[2 * (c0 + c) + 1];
      } else {
        bias[c] = b[c0 + c];
        bias[w + c] = b[I + c0 + c];
      }
    }
  }
  for (int64_t r = 0; r < n; r += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n - r);
    const float* x = xg + (first + r) * H;
    if (fused) {  // x rows are permuted; rows of gate_up in h's column order
      const int64_t r0 = p.act == Activation::kGptOss ? base + 2 * c0 : base + c0;
      const int64_t r1 = p.act == Activation::kGptOss ? r0 + w : base + I + c0;
      fused_mxfp4_product(p.gate_up, r0, w, x, H, rows, h, 2 * w);
      fused_mxfp4_product(p.gate_up, r1, w, x, H, rows, h + w, 2 * w);
    } else {
      const bool small = small_f32(p.gate_up, kmajor, n);
      weight_product(kmajor, small, rows, w, H, x, H, wa, ld, h, 2 * w);
      weight_product(kmajor, small, rows, w, H, x, H, wb, ld, h + w, 2 * w);
    }
    if (p.gate_up_bias) {
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t c = 0; c < 2 * w; ++c) h[i * 2 * w + c] += bias[c];
    }
    glu_forward(p.act, p.alpha, p.limit, h, 2 * w, rows, w, A + (first + r) * I + c0, I);
  }
}

// Stage 2 for expert e, output columns [h0, h0 + w): O[rows of e, h0:h0+w], times the
// routing weight of each row's slot.
void down_tile(const Problem& p, const Dispatch& d, const float* A, const float* route_w,
               int64_t e, int64_t h0, int64_t w, float* O, float* scratch) {
  const int64_t H = p.H, I = p.I;
  const int64_t first = d.offsets[e], n = d.count(e);
  const bool fused = fused_mxfp4(p.down, n);
  int64_t ld = I;  // row stride of wd: (w, I) rows, or an (I, w) panel when K-major
  const float* wd = fused           ? nullptr
                    : p.down_kmajor ? p.down.columns(e * I, I, h0, w, scratch, &ld)
                                    : p.down.rows(e * H + h0, w, scratch);
  const float* bias = p.down_bias ? p.down_bias + e * H + h0 : nullptr;
  for (int64_t r = 0; r < n; r += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n - r);
    float* o = O + (first + r) * H + h0;
    if (fused) {  // A rows are permuted
      fused_mxfp4_product(p.down, e * H + h0, w, A + (first + r) * I, I, rows, o, H);
    } else {
      weight_product(p.down_kmajor, small_f32(p.down, p.down_kmajor, n), rows, w, I,
                     A + (first + r) * I, I, wd, ld, o, H);
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float scale = route_w[d.sorted[first + r + i]];
      float* orow = o + i * H;
      for (int64_t c = 0; c < w; ++c) orow[c] = (orow[c] + (bias ? bias[c] : 0.0f)) * scale;
    }
  }
}

// Experts with at least this many rows run whole_expert. In fp32 it matched the Hugging Face
// peer at ~1024 rows per expert, where the tiles were slower; in bf16, oneDNN's bf16 kernels
// beat converting tiles to fp32 at every row count
// (docs/cpu-isa.md, "Measurements behind the code").
constexpr int64_t kWholeRows = 256;
constexpr int64_t kWholeRowsBF16 = 1;

// Whether an expert with n rows runs whole_expert: fp32 weights, or bf16 weights and bf16 x on
// a CPU with bf16 dot products. bf16 weights with fp32 x, fp16 and MXFP4 weights, and bf16 on
// CPUs without AVX512_BF16, where torch's bf16 matmul is far slower than our fp32 tiles, stay
// on the converting tiles (docs/cpu-isa.md, "Measurements behind the code").
bool whole_expert_rows(const Problem& p, bool bf16, int64_t n) {
  if (p.gate_up.kind == WeightRows::Kind::kF32) return n >= kWholeRows;
  return bf16 && n >= kWholeRowsBF16;
}

// glu_forward over whole rows h (n, 2I) -> a (n, I) with ATen's vectorised kernels (SLEEF exp)
// instead of glu_forward's scalar std::exp. It matters in bf16, where the GEMMs are fast; in
// fp32 it made no difference (docs/cpu-isa.md, "Measurements behind the code").
void glu_whole(const Problem& p, const at::Tensor& h, at::Tensor& a) {
  const int64_t I = p.I;
  if (p.act == Activation::kGptOss) {  // interleaved gate, up pairs
    const at::Tensor g = at::clamp(h.slice(1, 0, 2 * I, 2), std::nullopt, p.limit);
    const at::Tensor u = at::clamp(h.slice(1, 1, 2 * I, 2), -p.limit, p.limit);
    at::mul_out(a, at::mul(g, at::sigmoid(at::mul(g, p.alpha))), at::add(u, 1.0));
  } else {
    const at::Tensor g = h.narrow(1, 0, I), u = h.narrow(1, I, I);
    at::mul_out(a, p.act == Activation::kSilu ? at::silu(g) : at::gelu(g, "tanh"), u);
  }
}

// Expert e with one at::mm per projection, called outside parallel regions so that each call
// uses all threads: a = GLU(x_e @ gate_up_e^T + b), then O[rows of e] = (a @ down_e^T + b) *
// routing weight. xe (n, H) in the weights' dtype; in bf16 the products accumulate in fp32 and
// are rounded to bf16, as torch's bf16 matmul does. h (>= n, 2I) and a (>= n, I) are scratch
// shared by all experts (T=4096 fp32: one 23 MB h instead of eight, and no (N, I) A for the
// tiles), which saves page faults on fresh memory.
void whole_expert(const Problem& p, const Dispatch& d, const at::Tensor& xe,
                  const float* route_w, int64_t e, at::Tensor& h_buf, at::Tensor& a_buf,
                  float* O) {
  const int64_t H = p.H, I = p.I, first = d.offsets[e], n = d.count(e);
  const bool f32 = xe.scalar_type() == at::kFloat;
  const auto fopts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor h = h_buf.narrow(0, 0, n), a = a_buf.narrow(0, 0, n);  // (n, 2I), (n, I)
  const at::Tensor gu = p.gate_up_w[e].t(), dn = p.down_w[e].t();
  if (f32) {
    at::mm_out(h, xe, gu);
  } else {
    h.copy_(at::mm(xe, gu));
  }
  if (p.gate_up_bias) {
    h.add_(at::from_blob(const_cast<float*>(p.gate_up_bias) + e * 2 * I, {2 * I}, fopts));
  }
  glu_whole(p, h, a);
  at::Tensor o = at::from_blob(O + first * H, {n, H}, fopts);
  if (f32) {
    at::mm_out(o, a, dn);
  } else {
    o.copy_(at::mm(a.to(xe.scalar_type()), dn));
  }
  const float* db = p.down_bias ? p.down_bias + e * H : nullptr;
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float scale = route_w[d.sorted[first + i]];
      float* orow = O + (first + i) * H;
      for (int64_t c = 0; c < H; ++c) orow[c] = (orow[c] + (db ? db[c] : 0.0f)) * scale;
    }
  });
}

at::Tensor experts_forward(const at::Tensor& x, const at::Tensor& indices,
                           const at::Tensor& weights, Problem& p, const char* op) {
  const Dispatch d = build_dispatch(indices, p.E, op);
  const int64_t N = d.offsets[p.E], H = p.H, I = p.I, T = p.T, k = p.k;
  const at::Tensor xf = float_contiguous(x), wf = float_contiguous(weights);
  const float* xp = xf.data_ptr<float>();
  const float* route_w = wf.data_ptr<float>();
  const auto fopts = x.options().dtype(at::kFloat);
  at::Tensor xg = at::empty({N, H}, fopts);  // rows of x in dispatch order
  at::Tensor O = at::empty({N, H}, fopts);
  float* xgp = xg.data_ptr<float>();
  // rows of experts on the fused MXFP4 path: permuted for mxfp4_matvec_avx2
  std::vector<char> fused_row(N, 0);
  for (int64_t e = 0; e < p.E; ++e) {
    if (fused_mxfp4(p.gate_up, d.count(e)))
      std::fill_n(fused_row.begin() + d.offsets[e], d.count(e), 1);
  }
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      std::copy_n(xp + d.sorted[q] / k * H, H, xgp + q * H);
      if (fused_row[q]) mxfp4_permute_row(xgp + q * H, H);
    }
  });

  float* Op = O.data_ptr<float>();
  const bool bf16 = x.scalar_type() == at::kBFloat16 &&
                    p.gate_up.kind == WeightRows::Kind::kBF16 && cpu_has_bf16_dot();
  std::vector<char> whole(p.E, 0);
  int64_t max_rows = 0, whole_rows = 0;  // most rows of an expert on the tiles / whole_expert
  for (int64_t e = 0; e < p.E; ++e) {
    const int64_t n = d.count(e);
    whole[e] = n > 0 && whole_expert_rows(p, bf16, n);
    if (whole[e]) {
      whole_rows = std::max(whole_rows, n);
    } else {
      max_rows = std::max(max_rows, n);
    }
  }
  if (whole_rows > 0) {
    at::Tensor h = at::empty({whole_rows, 2 * I}, fopts), a = at::empty({whole_rows, I}, fopts);
    const at::Tensor xc = x.contiguous();
    for (int64_t e = 0; e < p.E; ++e) {
      if (!whole[e]) continue;
      const int64_t first = d.offsets[e], n = d.count(e);
      at::Tensor xe;  // (n, H)
      if (bf16) {
        at::Tensor tokens = at::empty({n}, x.options().dtype(at::kLong));
        int64_t* tp = tokens.data_ptr<int64_t>();
        for (int64_t i = 0; i < n; ++i) tp[i] = d.sorted[first + i] / k;
        xe = xc.index_select(0, tokens);
      } else {
        xe = at::from_blob(xgp + first * H, {n, H}, fopts);
      }
      whole_expert(p, d, xe, route_w, e, h, a, Op);
    }
  }
  // (N, I) activations of the experts on the tiles
  at::Tensor A = at::empty({max_rows > 0 ? N : 0, I}, fopts);
  float* Ap = A.data_ptr<float>();
  const int64_t w1 = tile_width(2, H, I, max_rows, p.gate_up_kmajor);
  const auto items1 = tiles(d, p.E, I, w1, whole);
  parallel_items(items1.size(), 2 * w1 * H + kRowBlock * 2 * w1 + 2 * w1,
                [&](int64_t item, float* scratch) {
                  const auto [e, c0] = items1[item];
                  gate_up_tile(p, d, xgp, e, c0, std::min(w1, I - c0), Ap, scratch);
                });

  for (int64_t q = 0; q < N; ++q) {
    if (fused_row[q]) mxfp4_permute_row(Ap + q * I, I);
  }

  const int64_t w2 = tile_width(1, I, H, max_rows, p.down_kmajor);
  const auto items2 = tiles(d, p.E, H, w2, whole);
  parallel_items(items2.size(), w2 * I, [&](int64_t item, float* scratch) {
    const auto [e, h0] = items2[item];
    down_tile(p, d, Ap, route_w, e, h0, std::min(w2, H - h0), Op, scratch);
  });

  return combine_slots(d, Op, T, k, H).to(x.scalar_type());
}

Problem make_problem(const at::Tensor& x, const at::Tensor& indices, int64_t E, int64_t I,
                     c10::string_view activation, double alpha, double limit,
                     const at::Tensor& gate_up_bias, const at::Tensor& down_bias) {
  TORCH_CHECK_VALUE(x.dim() == 2 && indices.dim() == 2 && indices.size(0) == x.size(0),
                    "gptcore.moe_experts: x (T, H) and indices (T, k) disagree: ", x.sizes(),
                    " vs ", indices.sizes());
  Problem p{x.size(0), indices.size(1), x.size(1), I, E, parse_activation(std::string(activation)),
            static_cast<float>(alpha), static_cast<float>(limit), {}, {}, false, false,
            gate_up_bias.defined() ? gate_up_bias.data_ptr<float>() : nullptr,
            down_bias.defined() ? down_bias.data_ptr<float>() : nullptr};
  return p;
}

at::Tensor moe_experts_fwd_cpu(const at::Tensor& x, const at::Tensor& indices,
                               const at::Tensor& weights, const at::Tensor& gate_up_proj,
                               const at::Tensor& down_proj,
                               const std::optional<at::Tensor>& gate_up_bias,
                               const std::optional<at::Tensor>& down_bias,
                               c10::string_view activation, double alpha, double limit) {
  checks::floating("moe_experts_fwd", "x", x, 2);
  checks::expert_weights("moe_experts_fwd", x, gate_up_proj, down_proj);
  checks::moe_inputs("moe_experts_fwd", x, indices, weights, gate_up_proj.size(0),
                     down_proj.size(2), gate_up_bias, down_bias);
  // Either layout in place (a transposed view is read K-major); copies only other strides.
  const bool gu_kmajor = kmajor_weights(gate_up_proj), dn_kmajor = kmajor_weights(down_proj);
  const at::Tensor gu = gu_kmajor ? gate_up_proj : gate_up_proj.contiguous();
  const at::Tensor dn = dn_kmajor ? down_proj : down_proj.contiguous();
#if GPTCORE_X86
  // The fused bf16 kernels read either layout and the biases in their own dtype.
  if (bf16_fused_experts_apply(x, gu, dn, indices.size(1)))
    return bf16_fused_experts(x, indices, weights, gu, dn, gate_up_bias.value_or(at::Tensor()),
                              down_bias.value_or(at::Tensor()),
                              parse_activation(std::string(activation)), static_cast<float>(alpha),
                              static_cast<float>(limit), gu_kmajor, dn_kmajor);
#endif
  const at::Tensor gub = optional_float(gate_up_bias), db = optional_float(down_bias);
  Problem p = make_problem(x, indices, gu.size(0), dn.size(2), activation, alpha, limit, gub, db);
#if GPTCORE_X86
  // The blocked bf16 GEMMs read row-major weight rows only; where they do not run, bf16
  // experts run whole through at::mm (oneDNN) in experts_forward.
  if (!gu_kmajor && !dn_kmajor && bf16_blocked_experts_apply(x, gu, dn, indices.size(1)))
    return bf16_blocked_experts(x, indices, weights, gu, dn, gub, db, p.act, p.alpha, p.limit);
#endif
  p.gate_up = float_weight_rows(gu_kmajor ? gu.transpose(1, 2) : gu);
  p.down = float_weight_rows(dn_kmajor ? dn.transpose(1, 2) : dn);
  p.gate_up_kmajor = gu_kmajor;
  p.down_kmajor = dn_kmajor;
  p.gate_up_w = gu;
  p.down_w = dn;
  return experts_forward(x, indices, weights, p, "moe_experts");
}

at::Tensor moe_experts_mxfp4_cpu(const at::Tensor& x, const at::Tensor& indices,
                                 const at::Tensor& weights, const at::Tensor& gate_up_blocks,
                                 const at::Tensor& gate_up_scales, const at::Tensor& down_blocks,
                                 const at::Tensor& down_scales,
                                 const std::optional<at::Tensor>& gate_up_bias,
                                 const std::optional<at::Tensor>& down_bias,
                                 c10::string_view activation, double alpha, double limit) {
  const char* op = "moe_experts_mxfp4";
  checks::floating(op, "x", x, 2);
  for (const auto& [t, name] : {std::pair{&gate_up_blocks, "gate_up_blocks"},
                                {&gate_up_scales, "gate_up_scales"}, {&down_blocks, "down_blocks"},
                                {&down_scales, "down_scales"}}) {
    checks::cpu(op, name, *t);
    TORCH_CHECK_TYPE(t->scalar_type() == at::kByte, "gptcore.", op, ": ", name,
                     " must be uint8, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->dim() == 3, "gptcore.", op, ": ", name, " must be 3-D, got shape ",
                      t->sizes());
  }
  // MXFP4 rows hold whole blocks of 32: H and I are multiples of 32.
  const int64_t H = x.size(-1), E = gate_up_blocks.size(0), I = 2 * down_blocks.size(2);
  TORCH_CHECK_VALUE(H % 32 == 0 && I % 32 == 0, "gptcore.", op, ": H and I must be multiples of "
                    "32, got H=", H, ", I=", I);
  checks::shape(op, "gate_up_blocks", gate_up_blocks, {E, 2 * I, H / 2});
  checks::shape(op, "gate_up_scales", gate_up_scales, {E, 2 * I, H / 32});
  checks::shape(op, "down_blocks", down_blocks, {E, H, I / 2});
  checks::shape(op, "down_scales", down_scales, {E, H, I / 32});
  checks::moe_inputs(op, x, indices, weights, E, I, gate_up_bias, down_bias);
  const at::Tensor gb = gate_up_blocks.contiguous(), gs = gate_up_scales.contiguous();
  const at::Tensor db_ = down_blocks.contiguous(), ds = down_scales.contiguous();
  const at::Tensor gub = optional_float(gate_up_bias), dbias = optional_float(down_bias);
  Problem p = make_problem(x, indices, gb.size(0), 2 * db_.size(2), activation, alpha, limit, gub,
                           dbias);
  p.gate_up = mxfp4_weight_rows(gb, gs);
  p.down = mxfp4_weight_rows(db_, ds);
  return experts_forward(x, indices, weights, p, "moe_experts");
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("moe_experts_fwd", &moe_experts_fwd_cpu);
  m.impl("moe_experts_mxfp4", &moe_experts_mxfp4_cpu);
}

}  // namespace gptcore
