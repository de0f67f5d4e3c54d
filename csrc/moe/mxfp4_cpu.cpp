// MXFP4 (OCP Microscaling, e2m1 values with one e8m0 scale per 32) quantise / dequantise on CPU.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "cpu_features.h"
#include "mxfp4_kernels.h"

namespace gptcore {

void mxfp4_dequantize_row_portable(const uint8_t* blocks, const uint8_t* scales, int64_t nblocks,
                                   float* out) {
  for (int64_t b = 0; b < nblocks; ++b) {
    const float scale = std::ldexp(1.0f, static_cast<int>(scales[b]) - 127);
    for (int i = 0; i < 16; ++i) {
      const uint8_t byte = blocks[16 * b + i];
      for (int nib = 0; nib < 2; ++nib) {
        const uint8_t code = nib ? byte >> 4 : byte & 0xF;
        const float mag = kE2M1[code & 7] * scale;
        out[32 * b + 2 * i + nib] = (code & 8) ? -mag : mag;
      }
    }
  }
}

namespace {

// Index of the nearest e2m1 magnitude to q in [0, 6], ties to the even code (see ref.py).
inline uint8_t e2m1_code(float q) {
  return (q > 0.25f) + (q >= 0.75f) + (q > 1.25f) + (q >= 1.75f) + (q > 2.5f) + (q >= 3.5f) +
         (q > 5.0f);
}

// One block of 32 floats -> 16 packed bytes; returns the e8m0 scale byte.
uint8_t quantize_block(const float* w, uint8_t* out) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(w[i]));
  int e = -127;  // an all-zero block keeps the smallest scale
  if (amax > 0.0f) {
    int exp;
    const float mant = std::frexp(amax / 6.0f, &exp);  // amax/6 = mant * 2^exp, mant in [.5, 1)
    e = std::min(127, std::max(-127, mant == 0.5f ? exp - 1 : exp));  // ceil(log2(amax/6))
  }
  const float inv_scale = std::ldexp(1.0f, -e);
  for (int i = 0; i < 16; ++i) {
    uint8_t code[2];
    for (int nib = 0; nib < 2; ++nib) {
      const float v = w[2 * i + nib];
      code[nib] = e2m1_code(std::fabs(v) * inv_scale) | (v < 0.0f ? 8 : 0);
    }
    out[i] = code[0] | (code[1] << 4);
  }
  return static_cast<uint8_t>(e + 127);
}

std::tuple<at::Tensor, at::Tensor> mxfp4_quantize_cpu(const at::Tensor& w) {
  checks::floating("mxfp4_quantize", "w", w);
  TORCH_CHECK_VALUE(w.dim() >= 1 && w.size(-1) % 32 == 0,
                    "gptcore.mxfp4_quantize: w's last dim must be a multiple of 32, got shape ",
                    w.sizes());
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const int64_t nblocks = wf.numel() / 32;
  auto sizes = w.sizes().vec();
  sizes.back() /= 2;
  at::Tensor blocks = at::empty(sizes, w.options().dtype(at::kByte));
  sizes.back() /= 16;
  at::Tensor scales = at::empty(sizes, w.options().dtype(at::kByte));
  const float* src = wf.data_ptr<float>();
  uint8_t* dst = blocks.data_ptr<uint8_t>();
  uint8_t* sc = scales.data_ptr<uint8_t>();
  at::parallel_for(0, nblocks, 256, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) sc[b] = quantize_block(src + 32 * b, dst + 16 * b);
  });
  return {blocks, scales};
}

at::Tensor mxfp4_dequantize_cpu(const at::Tensor& blocks, const at::Tensor& scales,
                                at::ScalarType dtype) {
  checks::cpu("mxfp4_dequantize", "blocks", blocks);
  checks::cpu("mxfp4_dequantize", "scales", scales);
  TORCH_CHECK_TYPE(blocks.scalar_type() == at::kByte && scales.scalar_type() == at::kByte,
                   "gptcore.mxfp4_dequantize: blocks and scales must be uint8, got ",
                   blocks.scalar_type(), " and ", scales.scalar_type());
  TORCH_CHECK_VALUE(blocks.dim() >= 1 && scales.dim() == blocks.dim() &&
                        blocks.size(-1) == 16 * scales.size(-1) &&
                        blocks.sizes().slice(0, blocks.dim() - 1) ==
                            scales.sizes().slice(0, scales.dim() - 1),
                    "gptcore.mxfp4_dequantize: blocks (..., K/2) and scales (..., K/32) disagree: ",
                    blocks.sizes(), " vs ", scales.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(dtype), "gptcore.mxfp4_dequantize: dtype must be floating, got ",
                   dtype);
  const at::Tensor b = blocks.contiguous(), s = scales.contiguous();
  auto sizes = blocks.sizes().vec();
  sizes.back() *= 2;
  at::Tensor out = at::empty(sizes, blocks.options().dtype(at::kFloat));
  const int64_t nblocks = s.numel();
  auto row = mxfp4_dequantize_row_portable;
#if GPTCORE_X86
  if (use_avx2()) row = mxfp4_dequantize_row_avx2;
#endif
  const uint8_t* bp = b.data_ptr<uint8_t>();
  const uint8_t* sp = s.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, nblocks, 1024, [&](int64_t begin, int64_t end) {
    row(bp + 16 * begin, sp + begin, end - begin, op + 32 * begin);
  });
  return dtype == at::kFloat ? out : out.to(dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(gptcore, CPU, m) {
  m.impl("mxfp4_quantize", &mxfp4_quantize_cpu);
  m.impl("mxfp4_dequantize", &mxfp4_dequantize_cpu);
}

}  // namespace gptcore
