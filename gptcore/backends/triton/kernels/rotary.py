"""Rotary position embedding (Su et al. 2021, RoFormer) of q and k: one program per row (b, s, h)
of a (B, S, H, D) tensor read through its strides, the row and its partner elements loaded
once each (BLOCK_D = D rounded up to a power of two), fp32 arithmetic.

Forward: y = x * cos + rotate(x) * sin, rotate pairing i with i + D/2 ((x1, x2) -> (-x2, x1)) or,
interleaved, 2i with 2i + 1. Backward (TRANSPOSE): dx = dy * cos - rotate(dy * sin), the
adjoint, which takes each partner's sine."""
import torch
import triton
import triton.language as tl


@triton.jit
def _rotary(x_ptr, cos_ptr, sin_ptr, y_ptr,                  # pointers
            S, H, D, stride_b, stride_s, stride_h, table_b,  # sizes, strides (table_b 0: shared)
            INTERLEAVED: tl.constexpr, TRANSPOSE: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    h, pos, b = row % H, (row // H) % S, row // (H * S)
    cols = tl.arange(0, BLOCK_D)
    keep = cols < D
    if INTERLEAVED:
        partner = cols ^ 1
        first = cols % 2 == 0                                # the element whose partner follows
    else:
        half = D // 2
        first = cols < half
        partner = tl.where(first, cols + half, cols - half)
    x_row = x_ptr + b * stride_b + pos * stride_s + h * stride_h
    table = b * table_b + pos * D
    x = tl.load(x_row + cols, mask=keep, other=0.0).to(tl.float32)
    xp = tl.load(x_row + partner, mask=keep, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + table + cols, mask=keep, other=0.0)
    # forward: y_i = x_i c_i -+ x_p s_i; adjoint: y_i = x_i c_i +- x_p s_p
    sn = tl.load(sin_ptr + table + (partner if TRANSPOSE else cols), mask=keep, other=0.0)
    sign = tl.where(first, -1.0, 1.0)
    if TRANSPOSE:
        sign = -sign
    y = x * c + sign * xp * sn
    tl.store(y_ptr + row * D + cols, y.to(y_ptr.dtype.element_ty), mask=keep)


def _rotate(x, cos, sin, interleaved, transpose):
    """x (B, S, H, D) any strides -> y (B, S, H, D) contiguous in x's dtype."""
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        x = x.contiguous()
    B, S, H, D = x.shape
    y = torch.empty((B, S, H, D), device=x.device, dtype=x.dtype)
    if y.numel():
        _rotary[(B * S * H,)](x, cos, sin, y, S, H, D, x.stride(0), x.stride(1), x.stride(2),
                              S * D if cos.shape[0] > 1 else 0, INTERLEAVED=interleaved,
                              TRANSPOSE=transpose, BLOCK_D=max(16, triton.next_power_of_2(D)))
    return y


def _tables(cos, sin):
    return cos.float().contiguous(), sin.float().contiguous()


def forward(q, k, cos, sin, interleaved):
    """q (B, S, Hq, D), k (B, S, Hk, D), tables (B or 1, S, D) -> rotated q, k."""
    cos, sin = _tables(cos, sin)
    return (_rotate(q, cos, sin, interleaved, False), _rotate(k, cos, sin, interleaved, False))


def backward(dq, dk, cos, sin, interleaved):
    """The adjoint rotation of dq, dk: the gradients of q, k."""
    cos, sin = _tables(cos, sin)
    return (_rotate(dq, cos, sin, interleaved, True), _rotate(dk, cos, sin, interleaved, True))
