"""MXFP4 (OCP Microscaling FP4) weights: the MXFP4Tensor container, gptcore.mxfp4_quantize and
gptcore.mxfp4_dequantize, and the specs of their ops (schema, check, fake, reference)."""
from dataclasses import dataclass

import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, run
from gptcore.ops.validate import FLOAT_DTYPES


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
    validate.tensor("w", w, dtypes=FLOAT_DTYPES)                     # before w.device
    return MXFP4Tensor(*run("mxfp4_quantize", w.device, w))


def mxfp4_dequantize(w4, dtype=torch.bfloat16):
    """MXFP4Tensor -> float tensor (..., K) in `dtype` (bf16 by default)."""
    if not isinstance(w4, MXFP4Tensor):
        raise TypeError(f"w4: expected a gptcore.MXFP4Tensor, got {type(w4).__name__}")
    validate.choice("dtype", dtype, FLOAT_DTYPES)
    return run("mxfp4_dequantize", w4.device, w4.blocks, w4.scales, dtype)


# ----------------------------------------------------------------------------- specs

def check_quantize(w, dtypes=FLOAT_DTYPES):
    validate.tensor("w", w, dtypes=dtypes)
    if w.dim() < 1 or w.shape[-1] % 32 != 0:
        raise ValueError(f"w: expected a last dim that is a multiple of 32, got shape "
                         f"{tuple(w.shape)}")
    if validate.eager() and not bool(torch.isfinite(w).all()):
        raise ValueError("w: expected finite values (MXFP4 has no inf), got inf or nan")


def check_blocks(blocks, scales, blocks_name="blocks", scales_name="scales"):
    """uint8 codes (..., K/2) with uint8 scales (..., K/32): whole blocks of 32 values."""
    validate.tensor(blocks_name, blocks, dtypes=(torch.uint8,))
    validate.tensor(scales_name, scales, dtypes=(torch.uint8,))
    want = (*blocks.shape[:-1], blocks.shape[-1] // 16) if blocks.dim() else None
    if want is None or blocks.shape[-1] % 16 != 0 or tuple(scales.shape) != want:
        raise ValueError(f"{scales_name}: expected shape (..., K/32) for {blocks_name} "
                         f"{tuple(blocks.shape)} (K a multiple of 32), got {tuple(scales.shape)}")


def check_dequantize(blocks, scales, dtype, dtypes=FLOAT_DTYPES):
    check_blocks(blocks, scales)


def _quantize_fake(w):
    *lead, K = w.shape
    return (w.new_empty(*lead, K // 2, dtype=torch.uint8),
            w.new_empty(*lead, K // 32, dtype=torch.uint8))


def _dequantize_fake(blocks, scales, dtype):
    *lead, half = blocks.shape
    return blocks.new_empty(*lead, 2 * half, dtype=dtype)


declare(name="mxfp4_quantize", schema="(Tensor w) -> (Tensor, Tensor)", check=check_quantize,
        fake=_quantize_fake, reference=ref.mxfp4_quantize)
declare(name="mxfp4_dequantize", schema="(Tensor blocks, Tensor scales, ScalarType dtype) -> Tensor",
        check=check_dequantize, fake=_dequantize_fake, reference=ref.mxfp4_dequantize)
