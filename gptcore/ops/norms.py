"""Norms: gptcore.rms_norm, with the residual add fused in, and the specs of its ops
(rms_norm_fwd / rms_norm_bwd: schema, check, fake, autograd, reference)."""
import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, differentiate, run
from gptcore.ops.validate import FLOAT_DTYPES


def rms_norm(x, weight, eps=1e-6, residual=None):
    """x (..., d) -> y = x / sqrt(mean(x**2) + eps) * weight (weight None: no gain).

    With `residual` (..., d): h = x + residual is normalised and (y, h) returned, the residual
    stream's add and the next block's norm in one pass over memory. fp32 accumulation."""
    validate.tensor("x", x, dtypes=FLOAT_DTYPES)                     # before x.device
    validate.positive("eps", eps)
    y, h, _ = run("rms_norm_fwd", x.device, x, residual, weight, float(eps))
    return y if residual is None else (y, h)


# ----------------------------------------------------------------------------- checks

def check_fwd(x, residual, weight, eps, dtypes=FLOAT_DTYPES):
    validate.tensor("x", x, dtypes=dtypes)
    if x.dim() < 1:
        raise ValueError("x: expected a tensor with a last (normalised) dim, got a scalar")
    for name, t, shape in (("residual", residual, x.shape), ("weight", weight, x.shape[-1:])):
        validate.optional_tensor(name, t, shape, x, dtypes)
    if residual is not None:
        validate.same_dtype(("x", "residual"), (x, residual))


def check_bwd(dy, dh, x, residual, h, weight, rstd, eps, dtypes=FLOAT_DTYPES):
    check_fwd(x, residual, weight, 1.0, dtypes)
    validate.tensor("dy", dy, dtypes=dtypes)
    shapes = [("dy", dy, x.shape), ("rstd", rstd, x.shape[:-1])]   # rstd fp32 whatever x is
    if residual is not None:
        shapes += [("h", h, x.shape), ("dh", dh, x.shape)]
    for name, t, want in shapes:
        validate.tensor(name, t, dtypes=dtypes)
        if t.shape != want:
            raise ValueError(f"{name}: expected shape {tuple(want)}, got {tuple(t.shape)}")


# ----------------------------------------------------------------------------- reference

def reference_fwd(x, residual, weight, eps):
    y, h = ref.rms_norm(x, weight, eps, residual)
    hf = h.to(torch.promote_types(h.dtype, torch.float32))
    rstd = torch.rsqrt(hf.pow(2).mean(-1) + eps).float()                # (...)
    return y, (h if residual is not None else x.new_empty(0)), rstd


def reference_bwd(dy, dh, x, residual, h, weight, rstd, eps):
    def forward(x, residual, weight):
        y, hh = ref.rms_norm(x, weight, eps, residual)
        return (y, hh) if residual is not None else y
    grads = (dy, dh) if residual is not None else dy
    dx, _, dweight = differentiate(forward, (x, residual, weight), grads)
    return dx, dweight


# ----------------------------------------------------------------------------- fakes, autograd

def _fwd_fake(x, residual, weight, eps):
    h = x.new_empty(x.shape) if residual is not None else x.new_empty(0)
    return x.new_empty(x.shape), h, x.new_empty(x.shape[:-1], dtype=torch.float32)


def _bwd_fake(dy, dh, x, residual, h, weight, rstd, eps):
    return x.new_empty(x.shape), (weight.new_empty(weight.shape) if weight is not None
                                  else x.new_empty(0))


def _autograd(bwd_name):
    def setup(ctx, inputs, output):
        x, residual, weight, eps = inputs
        ctx.eps, ctx.has_residual, ctx.has_weight = eps, residual is not None, weight is not None
        ctx.save_for_backward(x, residual, output[1], weight, output[2])

    def backward(ctx, dy, dh, drstd):
        x, residual, h, weight, rstd = ctx.saved_tensors
        dh = dh if dh is not None and ctx.has_residual else torch.zeros_like(h)
        dx, dweight = getattr(torch.ops.gptcore, bwd_name)(dy, dh, x, residual, h, weight, rstd,
                                                            ctx.eps)
        return (dx, dx if ctx.has_residual else None, dweight if ctx.has_weight else None, None)
    return setup, backward


declare(name="rms_norm_fwd", schema="(Tensor x, Tensor? residual, Tensor? weight, float eps) "
        "-> (Tensor, Tensor, Tensor)", check=check_fwd, fake=_fwd_fake, reference=reference_fwd,
        backward="rms_norm_bwd", autograd=_autograd)
declare(name="rms_norm_bwd", schema="(Tensor dy, Tensor dh, Tensor x, Tensor? residual, Tensor h, "
        "Tensor? weight, Tensor rstd, float eps) -> (Tensor, Tensor)", check=check_bwd,
        fake=_bwd_fake, reference=reference_bwd)
