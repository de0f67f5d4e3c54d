"""GELU (exact, and the tanh form written as x * sigmoid(2u)) and the gated activations SwiGLU /
GeGLU over one gate_up projection: elementwise programs of BLOCK values, fp32 arithmetic. The
gated programs own a (row, column block) tile and read gate and up from the two halves of the
row in place. Backward recomputes the activation from its input."""
import torch
import triton
import triton.language as tl

SQRT_2_OVER_PI = 0.7978845608028654
CUBIC = 0.044715
BLOCK = 1024


@triton.jit
def _gelu(x, TANH: tl.constexpr):
    if TANH:
        return x * tl.sigmoid(2.0 * SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _gelu_grad(x, TANH: tl.constexpr):
    if TANH:
        s = tl.sigmoid(2.0 * SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
        return s + x * s * (1.0 - s) * 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x)
    cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
    return cdf + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)


@triton.jit
def _gelu_fwd(x_ptr, y_ptr,                   # pointers
              n,                              # elements
              TANH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = offs < n
    x = tl.load(x_ptr + offs, mask=keep, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, _gelu(x, TANH).to(y_ptr.dtype.element_ty), mask=keep)


@triton.jit
def _gelu_bwd(dy_ptr, x_ptr, dx_ptr,          # pointers
              n,                              # elements
              TANH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = offs < n
    x = tl.load(x_ptr + offs, mask=keep, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=keep, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, (dy * _gelu_grad(x, TANH)).to(dx_ptr.dtype.element_ty), mask=keep)


@triton.jit
def _gated_fwd(gu_ptr, y_ptr,                 # pointers: gate_up (rows, 2I), y (rows, I)
               half,                          # I
               SWIGLU: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = cols < half
    g = tl.load(gu_ptr + row * 2 * half + cols, mask=keep, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * 2 * half + half + cols, mask=keep, other=0.0).to(tl.float32)
    if SWIGLU:
        act = g * tl.sigmoid(g)
    else:
        act = _gelu(g, True)
    tl.store(y_ptr + row * half + cols, (act * u).to(y_ptr.dtype.element_ty), mask=keep)


@triton.jit
def _gated_bwd(dy_ptr, gu_ptr, dgu_ptr,       # pointers: dy (rows, I), gate_up, dgate_up (rows, 2I)
               half,                          # I
               SWIGLU: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = cols < half
    g = tl.load(gu_ptr + row * 2 * half + cols, mask=keep, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * 2 * half + half + cols, mask=keep, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * half + cols, mask=keep, other=0.0).to(tl.float32)
    if SWIGLU:
        s = tl.sigmoid(g)
        act = g * s
        grad = s + g * s * (1.0 - s)
    else:
        act = _gelu(g, True)
        grad = _gelu_grad(g, True)
    out = dgu_ptr + row * 2 * half + cols
    tl.store(out, (dy * u * grad).to(dgu_ptr.dtype.element_ty), mask=keep)
    tl.store(out + half, (dy * act).to(dgu_ptr.dtype.element_ty), mask=keep)


def gelu_forward(x, approximate):
    """x (...) -> gelu(x), same shape and dtype."""
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        _gelu_fwd[(triton.cdiv(x.numel(), BLOCK),)](x, y, x.numel(), TANH=approximate == "tanh",
                                                    BLOCK=BLOCK)
    return y


def gelu_backward(dy, x, approximate):
    """-> dx = dy * gelu'(x)."""
    x = x.contiguous()
    dx = torch.empty_like(x)
    if x.numel():
        _gelu_bwd[(triton.cdiv(x.numel(), BLOCK),)](dy.contiguous(), x, dx, x.numel(),
                                                    TANH=approximate == "tanh", BLOCK=BLOCK)
    return dx


def _grid(gate_up):
    half = gate_up.shape[-1] // 2
    rows = gate_up.numel() // (2 * half) if half else 0
    block = min(BLOCK, max(16, triton.next_power_of_2(half)))
    return half, rows, block


def gated_forward(gate_up, kind):
    """gate_up (..., 2I) -> act(gate) * up (..., I)."""
    gate_up = gate_up.contiguous()
    half, rows, block = _grid(gate_up)
    y = gate_up.new_empty(*gate_up.shape[:-1], half)
    if rows:
        _gated_fwd[(rows, triton.cdiv(half, block))](gate_up, y, half, SWIGLU=kind == "swiglu",
                                                     BLOCK=block)
    return y


def gated_backward(dy, gate_up, kind):
    """-> dgate_up (..., 2I): [d gate, d up]."""
    gate_up = gate_up.contiguous()
    half, rows, block = _grid(gate_up)
    dgu = torch.empty_like(gate_up)
    if rows:
        _gated_bwd[(rows, triton.cdiv(half, block))](dy.contiguous(), gate_up, dgu, half,
                                                     SWIGLU=kind == "swiglu", BLOCK=block)
    return dgu
