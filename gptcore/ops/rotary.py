"""Rotary position embeddings: gptcore.rotary, q and k rotated in one op, and the specs of its
ops (rotary_fwd / rotary_bwd: schema, check, fake, autograd, reference)."""
import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, differentiate, run
from gptcore.ops.validate import FLOAT_DTYPES


STYLES = ("half", "interleaved")


def rotary(q, k, positions=None, theta=10000.0, *, style="half", cos=None, sin=None):
    """Rotary position embedding (RoFormer) of q (B, S, Hq, D) and k (B, S, Hk, D) in one op:
    x * cos + rotate(x) * sin, in fp32, in q's dtype, contiguous (B, S, H, D). Any strides: views
    of a fused projection, or (B, H, S, D) tensors passed as .transpose(1, 2).

    The angles come from `positions` (S,) or (B, S) and `theta` (angle of pair i at position p:
    p * theta^(-2i/D)), or are given as tables `cos`, `sin` (S, D) or (B or 1, S, D), e.g. the
    ones a Hugging Face rotary embedding returns (any RoPE scaling). style "half" pairs element
    i with i + D/2, (x1, x2) -> (-x2, x1) (Llama, Hugging Face); "interleaved" pairs 2i with
    2i + 1 (GPT-J, Meta's original Llama). Tables get no gradient from the kernels: with grad
    mode on and a table that requires one, the reference computes the rotation instead."""
    validate.choice("style", style, STYLES)
    if (positions is None) == (cos is None or sin is None):
        raise ValueError("positions, cos/sin: expected either positions or both tables cos and "
                         f"sin, got positions={'a tensor' if positions is not None else None}, "
                         f"cos={'a tensor' if cos is not None else None}, "
                         f"sin={'a tensor' if sin is not None else None}")
    validate.tensor("q", q, ndim=4)
    if positions is not None:
        cos, sin = rotary_tables(positions, q.shape[-1], theta, style)
    for name, t in (("cos", cos), ("sin", sin)):
        validate.tensor(name, t, dtypes=FLOAT_DTYPES + (torch.float64,))
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]                                  # (1, S, D)
    interleaved = style == "interleaved"
    if torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad):
        check_fwd(q, k, cos, sin, interleaved)
        return ref.rotary(q, k, cos, sin, interleaved)
    return run("rotary_fwd", q.device, q, k, cos, sin, interleaved)


def rotary_tables(positions, head_dim, theta=10000.0, style="half"):
    """cos, sin (..., S, D) fp32 at integer `positions` (..., S): pair i turns by
    p * theta^(-2i/D), its angle laid out as `style` pairs the elements."""
    validate.tensor("positions", positions)
    if positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positions: expected an integer tensor, got {positions.dtype}")
    validate.positive("theta", theta)
    if head_dim % 2:
        raise ValueError(f"head_dim: expected an even head dim (rotary turns pairs), got {head_dim}")
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device,
                                       dtype=torch.float32) / head_dim)   # (D/2,)
    angles = positions.float()[..., None] * inv_freq                     # (..., S, D/2)
    if style == "interleaved":
        angles = angles.repeat_interleave(2, dim=-1)                     # (..., S, D)
    else:
        angles = torch.cat((angles, angles), dim=-1)                     # (..., S, D)
    return angles.cos(), angles.sin()


# ----------------------------------------------------------------------------- checks

def check_fwd(q, k, cos, sin, interleaved, dtypes=FLOAT_DTYPES):
    validate.tensor("q", q, ndim=4, dtypes=dtypes)
    validate.tensor("k", k, ndim=4, dtypes=dtypes)
    validate.same_dtype(("q", "k"), (q, k))
    validate.same_device("k", k, q)
    B, S, _, D = q.shape
    if k.shape[0] != B or k.shape[1] != S or k.shape[3] != D:
        raise ValueError(f"k: expected shape ({B}, {S}, Hk, {D}) like q's (B, S, _, D), got "
                         f"{tuple(k.shape)}")
    if D % 2:
        raise ValueError(f"q: expected an even head dim D (rotary turns pairs), got D={D}")
    for name, t in (("cos", cos), ("sin", sin)):
        validate.tensor(name, t, ndim=3, dtypes=FLOAT_DTYPES + (torch.float64,))
        validate.same_device(name, t, q)
        if t.shape[0] not in (1, B) or tuple(t.shape[1:]) != (S, D):
            raise ValueError(f"{name}: expected shape (1 or {B}, {S}, {D}), got {tuple(t.shape)}")


def check_bwd(dq, dk, cos, sin, interleaved, dtypes=FLOAT_DTYPES):
    check_fwd(dq, dk, cos, sin, interleaved, dtypes)


# ----------------------------------------------------------------------------- reference

def reference_fwd(q, k, cos, sin, interleaved):
    return ref.rotary(q, k, cos, sin, interleaved)


def reference_bwd(dq, dk, cos, sin, interleaved):
    """The gradients of q and k: the forward is linear in them, so differentiating it at any
    point (zeros) gives the transposed rotation of dq, dk."""
    def forward(q, k):
        return ref.rotary(q, k, cos, sin, interleaved)
    return differentiate(forward, (dq.new_zeros(dq.shape), dk.new_zeros(dk.shape)), (dq, dk))


# ----------------------------------------------------------------------------- fakes, autograd

def _fake(q, k, cos, sin, interleaved):
    return q.new_empty(q.shape), k.new_empty(k.shape)


def _autograd(bwd_name):
    def setup(ctx, inputs, output):
        _, _, cos, sin, interleaved = inputs
        ctx.interleaved, ctx.outputs = interleaved, [(t.shape, t.dtype, t.device) for t in output]
        ctx.save_for_backward(cos, sin)

    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq, dk = (torch.zeros(shape, dtype=dtype, device=device) if g is None else g
                  for g, (shape, dtype, device) in zip((dq, dk), ctx.outputs))
        dq_in, dk_in = getattr(torch.ops.gptcore, bwd_name)(dq, dk, cos, sin, ctx.interleaved)
        return dq_in, dk_in, None, None, None
    return setup, backward


declare(name="rotary_fwd", schema="(Tensor q, Tensor k, Tensor cos, Tensor sin, bool interleaved) "
        "-> (Tensor, Tensor)", check=check_fwd, fake=_fake, reference=reference_fwd,
        backward="rotary_bwd", autograd=_autograd)
declare(name="rotary_bwd", schema="(Tensor dq, Tensor dk, Tensor cos, Tensor sin, "
        "bool interleaved) -> (Tensor, Tensor)", check=check_bwd, fake=_fake,
        reference=reference_bwd)
