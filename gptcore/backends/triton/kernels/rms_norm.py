"""RMSNorm (Zhang & Sennrich 2019) with the residual add fused in: one program per row, the whole
row in registers (BLOCK_D = dim rounded up to a power of two), fp32 arithmetic.

Forward: h = x + residual (stored), rstd = 1/sqrt(mean(h^2) + eps), y = h * rstd * weight.
Backward: g = dy * weight, dx = rstd * g - h * rstd^3 * <g, h> / dim (+ dh), and each row's
dy * h * rstd, summed over rows by the launcher for the weight's gradient."""
import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_fwd(x_ptr, res_ptr, w_ptr, y_ptr, h_ptr, rstd_ptr,   # pointers
                  dim, eps,                                         # sizes, epsilon
                  HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    keep = cols < dim
    h = tl.load(x_ptr + row * dim + cols, mask=keep, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        h += tl.load(res_ptr + row * dim + cols, mask=keep, other=0.0).to(tl.float32)
        tl.store(h_ptr + row * dim + cols, h.to(h_ptr.dtype.element_ty), mask=keep)
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / dim + eps)
    tl.store(rstd_ptr + row, rstd)
    y = h * rstd
    if HAS_WEIGHT:
        y *= tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * dim + cols, y.to(y_ptr.dtype.element_ty), mask=keep)


@triton.jit
def _rms_norm_bwd(dy_ptr, dh_ptr, src_ptr, w_ptr, rstd_ptr, dx_ptr, dw_rows_ptr,   # pointers
                  dim,                                                           # sizes
                  HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    keep = cols < dim
    dy = tl.load(dy_ptr + row * dim + cols, mask=keep, other=0.0).to(tl.float32)
    src = tl.load(src_ptr + row * dim + cols, mask=keep, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + row)
    g = dy
    if HAS_WEIGHT:
        g = dy * tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
    dot = tl.sum(g * src, axis=0)
    dx = rstd * g - src * (rstd * rstd * rstd * dot / dim)
    if HAS_RESIDUAL:
        dx += tl.load(dh_ptr + row * dim + cols, mask=keep, other=0.0).to(tl.float32)
    tl.store(dx_ptr + row * dim + cols, dx.to(dx_ptr.dtype.element_ty), mask=keep)
    if HAS_WEIGHT:
        tl.store(dw_rows_ptr + row * dim + cols, dy * src * rstd, mask=keep)


def _block(dim):
    return max(16, triton.next_power_of_2(dim))


def forward(x, residual, weight, eps):
    """x (..., dim) [+ residual] -> y, h (empty without a residual), rstd (...) fp32."""
    x = x.contiguous()
    dim = x.shape[-1]
    rows = x.numel() // dim if dim else 0
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else x.new_empty(0)
    rstd = torch.empty(x.shape[:-1], device=x.device, dtype=torch.float32)
    if rows and dim:
        _rms_norm_fwd[(rows,)](x, residual.contiguous() if residual is not None else x,
                               weight.contiguous() if weight is not None else x, y, h if
                               residual is not None else y, rstd, dim, eps,
                               HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None,
                               BLOCK_D=_block(dim))
    return y, h, rstd


def backward(dy, dh, x, residual, h, weight, rstd):
    """-> dx (also the residual's gradient), dweight (dim,) in weight's dtype (empty without)."""
    src = (h if residual is not None else x).contiguous()
    dim = src.shape[-1]
    rows = src.numel() // dim if dim else 0
    dx = torch.empty_like(src)
    dw_rows = torch.empty(rows if weight is not None else 0, dim, device=src.device,
                          dtype=torch.float32)
    if rows and dim:
        _rms_norm_bwd[(rows,)](dy.contiguous(), dh.contiguous() if residual is not None else dy,
                               src, weight.contiguous() if weight is not None else src,
                               rstd.contiguous(), dx, dw_rows if weight is not None else dx, dim,
                               HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None,
                               BLOCK_D=_block(dim))
    dweight = dw_rows.sum(0).to(weight.dtype) if weight is not None else x.new_empty(0)
    return dx, dweight
