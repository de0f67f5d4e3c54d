"""MXFP4 (OCP Microscaling FP4) weights: the MXFP4Tensor container and (de)quantisation."""
from dataclasses import dataclass

import torch

from gptcore.ops import validate
from gptcore.ops.backend import select


@dataclass(frozen=True)
class MXFP4Tensor:
    """A tensor of shape (..., K) stored as e2m1 codes, two per byte (even element in the low
    nibble), in `blocks` uint8 (..., K/2), with one e8m0 scale per 32 values in `scales`
    uint8 (..., K/32): value = e2m1(code) * 2**(scale - 127). 4.25 bits per weight."""
    blocks: torch.Tensor
    scales: torch.Tensor

    @property
    def shape(self):
        return torch.Size((*self.blocks.shape[:-1], 2 * self.blocks.shape[-1]))

    @property
    def device(self):
        return self.blocks.device

    def dim(self):
        return self.blocks.dim()

    def nbytes(self):
        return self.blocks.numel() + self.scales.numel()

    def __getitem__(self, index):
        """Indexes leading dims (e.g. one expert): w4[e] is an MXFP4Tensor of shape (N, K)."""
        return MXFP4Tensor(self.blocks[index], self.scales[index])

    def dequantize(self, dtype=torch.bfloat16):
        return mxfp4_dequantize(self, dtype)

    def __repr__(self):
        return f"MXFP4Tensor(shape={tuple(self.shape)}, device={self.device})"


def mxfp4_quantize(w):
    """w (..., K), K % 32 == 0 -> MXFP4Tensor. Round to nearest e2m1 (ties to even) under the
    smallest power-of-two scale that does not clip the block's largest magnitude."""
    validate.mxfp4_input(w)
    blocks, scales = select("mxfp4_quantize", w.device)(w)
    return MXFP4Tensor(blocks, scales)


def mxfp4_dequantize(w4, dtype=torch.bfloat16):
    """MXFP4Tensor -> float tensor (..., K) in `dtype` (bf16 by default)."""
    if not isinstance(w4, MXFP4Tensor):
        raise TypeError(f"w4: expected a gptcore.MXFP4Tensor, got {type(w4).__name__}")
    validate.choice("dtype", dtype, validate.FLOAT_DTYPES)
    return select("mxfp4_dequantize", w4.device)(w4.blocks, w4.scales, dtype)
