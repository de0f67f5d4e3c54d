"""Weight-only quantised linear layers: the QuantizedWeight container, gptcore.quantize_weight and
gptcore.quantized_linear, and the spec of their op (schema, check, fake, reference).

y = x @ dequant(W).T (+ bias) with W stored as bf16, int8 or int4 (symmetric, one fp32 scale per
group of G consecutive input columns; G = K is per output channel) or MXFP4 (the experts' OCP
format, K padded to whole blocks of 32). The stored layouts are written out in gptcore/ref.py
(quantize_weight). Inference only: the op has no gradient."""
from dataclasses import dataclass

import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, run
from gptcore.ops.validate import FLOAT_DTYPES

FORMATS = ("bf16", "int8", "int4", "mxfp4")
# int4's default of 32 columns per scale matches llama.cpp's Q4_0 blocks and MXFP4's.
DEFAULT_GROUP = {"int4": 32, "mxfp4": 32}


@dataclass(frozen=True)
class QuantizedWeight:
    """A linear layer's weight (N, K) in one of FORMATS: `data` and `scales` as gptcore/ref.py
    lays them out, `group_size` columns per scale, `in_features` = K (the stored rows may be
    padded to whole bytes or blocks)."""
    format: str
    data: torch.Tensor
    scales: torch.Tensor | None
    group_size: int
    in_features: int

    @property
    def shape(self):
        return torch.Size((self.data.shape[0], self.in_features))

    @property
    def device(self):
        return self.data.device

    def nbytes(self):
        """Bytes streamed per use of the weight: data plus scales."""
        extra = 0 if self.scales is None else self.scales.numel() * self.scales.element_size()
        return self.data.numel() * self.data.element_size() + extra

    def dequantize(self, dtype=torch.float32):
        return ref.dequantize_weight(self.data, self.scales, self.format, self.group_size,
                                     self.in_features).to(dtype)

    def to(self, device):
        return QuantizedWeight(self.format, self.data.to(device),
                               None if self.scales is None else self.scales.to(device),
                               self.group_size, self.in_features)

    def __repr__(self):
        return (f"QuantizedWeight({self.format}, shape={tuple(self.shape)}, "
                f"group_size={self.group_size})")


def quantize_weight(w, format="int8", group_size=None):
    """w (N, K) float -> QuantizedWeight. group_size: columns per scale; default per output
    channel (K) for int8, 32 for int4; MXFP4's is 32 by definition."""
    validate.tensor("w", w, ndim=2, dtypes=FLOAT_DTYPES)
    validate.choice("format", format, FORMATS)
    K = w.shape[1]
    G = group_size if group_size is not None else DEFAULT_GROUP.get(format, max(K, 1))
    validate.integer("group_size", G, 1)
    if format == "int4" and G % 2:
        raise ValueError(f"group_size: expected an even group size for int4 (two codes a byte), "
                         f"got {G}")
    if format == "mxfp4" and G != 32:
        raise ValueError(f"group_size: expected 32 for mxfp4 (its block size), got {G}")
    if format == "bf16":
        G = 0
    if validate.eager() and not bool(torch.isfinite(w).all()):
        raise ValueError("w: expected finite values, got inf or nan")
    if format == "mxfp4":
        padded = torch.nn.functional.pad(w, (0, -K % 32))
        from gptcore.ops.mxfp4 import mxfp4_quantize
        q = mxfp4_quantize(padded)
        return QuantizedWeight(format, q.blocks, q.scales, 32, K)
    data, scales = ref.quantize_weight(w, format, G)
    return QuantizedWeight(format, data, scales, G, K)


def quantized_linear(x, qweight, bias=None):
    """x (..., K) fp32 / bf16 / fp16, qweight a QuantizedWeight (N, K) -> (..., N) in x's dtype,
    accumulated in fp32."""
    if not isinstance(qweight, QuantizedWeight):
        raise TypeError(f"qweight: expected a gptcore.QuantizedWeight, got "
                        f"{type(qweight).__name__}")
    validate.tensor("x", x, dtypes=FLOAT_DTYPES)                     # before x.device
    return run("quantized_linear", x.device, x, qweight.data, qweight.scales, qweight.format,
               qweight.group_size, bias)


# ----------------------------------------------------------------------------- spec

def stored_shapes(fmt, N, K, G):
    """(data shape, data dtype, scales shape or None, scales dtype) of W (N, K) in `fmt`."""
    if fmt == "bf16":
        return (N, K), torch.bfloat16, None, None
    if fmt == "mxfp4":
        blocks = -(-K // 32)
        return (N, 16 * blocks), torch.uint8, (N, blocks), torch.uint8
    groups = -(-K // G)
    if fmt == "int8":
        return (N, K), torch.int8, (N, groups), torch.float32
    return (N, -(-K // 2)), torch.uint8, (N, groups), torch.float32


def check(x, data, scales, fmt, group_size, bias, dtypes=FLOAT_DTYPES):
    validate.tensor("x", x, dtypes=dtypes)
    if x.dim() < 1:
        raise ValueError("x: expected a tensor with a last (input features) dim, got a scalar")
    validate.choice("format", fmt, FORMATS)
    validate.tensor("data", data, ndim=2)
    N, K = data.shape[0], x.shape[-1]
    if fmt != "bf16":
        validate.integer("group_size", group_size, 1)
        if (fmt == "int4" and group_size % 2) or (fmt == "mxfp4" and group_size != 32):
            raise ValueError(f"group_size: expected {'32' if fmt == 'mxfp4' else 'an even size'} "
                             f"for {fmt}, got {group_size}")
    shape, dtype, scales_shape, scales_dtype = stored_shapes(fmt, N, K, max(group_size, 1))
    if data.dtype != dtype:
        raise TypeError(f"data: expected {dtype} for {fmt}, got {data.dtype}")
    if tuple(data.shape) != shape:
        raise ValueError(f"data: expected shape {shape} for {fmt} weights with K={K} (x's last "
                         f"dim), got {tuple(data.shape)}")
    validate.same_device("data", data, x)
    if scales_shape is None:
        if scales is not None:
            raise ValueError(f"scales: expected None for {fmt}, got a tensor")
    else:
        if scales is None:
            raise ValueError(f"scales: expected a tensor of shape {scales_shape} for {fmt}, got None")
        validate.tensor("scales", scales, dtypes=(scales_dtype,))
        if tuple(scales.shape) != scales_shape:
            raise ValueError(f"scales: expected shape {scales_shape}, got {tuple(scales.shape)}")
        validate.same_device("scales", scales, x)
    validate.optional_tensor("bias", bias, (N,), x, dtypes)


def reference(x, data, scales, fmt, group_size, bias):
    return ref.quantized_linear(x, data, scales, fmt, group_size, bias)


def _fake(x, data, scales, fmt, group_size, bias):
    return x.new_empty(*x.shape[:-1], data.shape[0])


declare(name="quantized_linear", schema="(Tensor x, Tensor data, Tensor? scales, str format, "
        "int group_size, Tensor? bias) -> Tensor", check=check, fake=_fake, reference=reference)
