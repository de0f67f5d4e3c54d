"""QuantizedLinear: an nn.Linear whose weight is stored in a weight-only quantised form
(gptcore.QuantizedWeight: bf16, int8, int4, MXFP4) and applied by gptcore.quantized_linear.
Inference only. The stored form lives in buffers (`data`, `scales`, `bias`), so state_dict,
.to() and safetensors see it like any other module state."""
import torch
from torch import nn

from gptcore.ops.quantized_linear import QuantizedWeight, quantize_weight, stored_shapes
from gptcore.ops.backend import select
from gptcore.ops.spec import run


class QuantizedLinear(nn.Module):
    def __init__(self, in_features, out_features, format, group_size, bias=False, device=None):
        """An empty layer of the given layout (filled by load_state_dict); from_linear quantises
        an existing nn.Linear."""
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.format, self.group_size = format, group_size
        shape, dtype, scales_shape, scales_dtype = stored_shapes(format, out_features,
                                                                 in_features, max(group_size, 1))
        self.register_buffer("data", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("scales", None if scales_shape is None else
                             torch.zeros(scales_shape, dtype=scales_dtype, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear, format, group_size=None):
        qw = quantize_weight(linear.weight.detach(), format, group_size)
        layer = cls(linear.in_features, linear.out_features, format, qw.group_size,
                    bias=linear.bias is not None, device=linear.weight.device)
        layer.data, layer.scales = qw.data, qw.scales
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    @property
    def qweight(self):
        return QuantizedWeight(self.format, self.data, self.scales, self.group_size,
                               self.in_features)

    @property
    def weight(self):
        """The dequantised weight (out, in) in fp32, for code that reads `.weight` (tied heads,
        dtype probes); the forward never builds it."""
        return self.qweight.dequantize()

    def forward(self, x):                                  # (..., in) -> (..., out)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        op = select("quantized_linear", x.device)
        if op._qualified_op_name == "gptcore::quantized_linear" and not \
                torch.compiler.is_compiling() and isinstance(x, torch.Tensor):
            # The C++ kernel checks every argument itself (quantized_linear_cpu.cpp) and this
            # layer's buffers were laid out by stored_shapes: the spec's Python check would
            # only repeat it, at about 60 us a call (3 ms of a Llama decode token, 57 layers).
            # Other backends (the reference, Triton) keep it: their kernels check nothing.
            return op.default(x, self.data, self.scales, self.format, self.group_size, bias)
        return run("quantized_linear", x.device, x, self.data, self.scales, self.format,
                   self.group_size, bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.format}, group_size={self.group_size}, bias={self.bias is not None}")
