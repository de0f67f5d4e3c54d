"""Triton grouped expert GEMMs over the dispatch index of moe_route.py: one program per
(BLOCK_M rows of one expert, BLOCK_N columns), gathering token rows by sorted slot (vLLM
fused_moe), the GLU activation fused in GEMM 1's epilogue and the routing weight in GEMM 2's
(OpenAI triton_kernels), and the weight gradients as per-expert X^T dY (ScatterMoE).
Every product of a row index and a row length is formed in int64 (vLLM issue 5938).
MXFP4 weights (e2m1 codes two per byte, e8m0 scale per 32 along K) are dequantised per tile.
"""
import triton
import triton.language as tl

SILU, GELU, GPT_OSS = 0, 1, 2
ACTIVATIONS = {"silu": SILU, "gelu": GELU, "gpt_oss": GPT_OSS}
# what _grouped_gemm_kernel does with its tile C (its EPILOGUE constexpr): store it; take it as
# d(activation) and store the GLU backward; store its dot with dy per slot (routing gradient)
EPILOGUES = {"store": 0, "glu_backward": 1, "routing_dot": 2}
_SQRT_2_OVER_PI = 0.7978845608028654


@triton.jit
def _mxfp4_tile(blocks_ptr, scales_ptr, wrow, ks, K, mask):
    """Values of weight rows `wrow` (1, BN) at columns `ks` (BK, 1) as fp32 (BK, BN)."""
    byte = tl.load(blocks_ptr + wrow * (K // 2) + ks // 2, mask=mask, other=0).to(tl.int32)
    code = (byte >> ((ks % 2) * 4)) & 0xF                          # even element: low nibble
    exponent = tl.load(scales_ptr + wrow * (K // 32) + ks // 32, mask=mask, other=127)
    mag_bits = code & 7
    e = mag_bits >> 1
    m = (mag_bits & 1).to(tl.float32)
    # e2m1: e == 0 is subnormal (0 or 0.5), else 2^(e-1) * (1 + m/2): 1, 1.5, 2, 3, 4, 6
    mag = tl.where(e == 0, 0.5 * m, tl.exp2((e - 1).to(tl.float32)) * (1.0 + 0.5 * m))
    value = tl.where(code >= 8, -mag, mag)
    return value * tl.exp2(exponent.to(tl.float32) - 127.0)


@triton.jit
def _glu_rows(n, I, ACTIVATION: tl.constexpr):
    """Rows of gate_up_proj holding the gate and the up projection of output column n."""
    if ACTIVATION == 2:
        return 2 * n, 2 * n + 1                                    # gpt_oss: interleaved
    else:
        return n, I + n


@triton.jit
def _gate_up_kernel(
    # pointers
    x_ptr,                      # (T, H) activations
    w_ptr, w_scales_ptr,        # (E, 2I, H) float, any strides, or MXFP4 blocks (E, 2I, H/2) +
                                # scales, contiguous
    bias_ptr,                   # (E, 2I) or dummy
    sorted_ptr, block_expert_ptr,
    act_ptr,                    # out: (rows, I) activation
    pre_ptr,                    # out if STORE_PRE: (rows, 2I) fp32 pre-activation (+bias)
    # sizes and the float weights' strides (gpt-oss stores them K-major: stride_wk = 2I)
    num_slots, H, I, stride_we, stride_wn, stride_wk, alpha, limit,
    # meta
    TOP_K: tl.constexpr, ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr,
    STORE_PRE: tl.constexpr, MXFP4: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(sorted_ptr + rows)
    row_ok = slots < num_slots
    tok = (slots // TOP_K).to(tl.int64)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < I
    gate_rows, up_rows = _glu_rows(n, I, ACTIVATION)
    gate_w = (e * 2 * I + gate_rows)[None, :]                      # (1, BN) int64 weight rows
    up_w = (e * 2 * I + up_rows)[None, :]
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    # Pointers are built once and advanced by BLOCK_K: rebuilding int64 tile offsets in the
    # loop took every register at 64x64 tiles and spilled (cuobjdump STACK > 0).
    a_ptrs = x_ptr + tok[:, None] * H + offs_k[None, :]           # (BM, BK)
    expert_w = w_ptr + e * stride_we                               # float weights only
    gate_ptrs = expert_w + gate_rows[None, :] * stride_wn + offs_k[:, None] * stride_wk  # (BK, BN)
    up_ptrs = expert_w + up_rows[None, :] * stride_wn + offs_k[:, None] * stride_wk
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k < H - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b_mask = k_ok[:, None] & n_ok[None, :]
        if MXFP4:
            ks = (k0 + offs_k)[:, None]
            b_gate = _mxfp4_tile(w_ptr, w_scales_ptr, gate_w, ks, H, b_mask)
            b_up = _mxfp4_tile(w_ptr, w_scales_ptr, up_w, ks, H, b_mask)
        else:
            b_gate = tl.load(gate_ptrs, mask=b_mask, other=0.0)
            b_up = tl.load(up_ptrs, mask=b_mask, other=0.0)
        acc_gate = tl.dot(a, b_gate.to(a.dtype), acc_gate, input_precision=DOT_PRECISION)
        acc_up = tl.dot(a, b_up.to(a.dtype), acc_up, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K
        gate_ptrs += BLOCK_K * stride_wk
        up_ptrs += BLOCK_K * stride_wk
    if HAS_BIAS:
        acc_gate += tl.load(bias_ptr + e * 2 * I + gate_rows, mask=n_ok, other=0.0)[None, :]
        acc_up += tl.load(bias_ptr + e * 2 * I + up_rows, mask=n_ok, other=0.0)[None, :]
    out_mask = row_ok[:, None] & n_ok[None, :]
    if STORE_PRE:
        pre = pre_ptr + rows[:, None] * (2 * I)
        tl.store(pre + gate_rows[None, :], acc_gate, mask=out_mask)
        tl.store(pre + up_rows[None, :], acc_up, mask=out_mask)
    if ACTIVATION == 0:
        h = acc_gate * tl.sigmoid(acc_gate) * acc_up
    elif ACTIVATION == 1:
        # gelu_tanh(g) = g/2 (1 + tanh(z)) = g * sigmoid(2z): no tanh (libdevice) needed
        z = _SQRT_2_OVER_PI * (acc_gate + 0.044715 * acc_gate * acc_gate * acc_gate)
        h = acc_gate * tl.sigmoid(2.0 * z) * acc_up
    else:
        g = tl.minimum(acc_gate, limit)
        u = tl.minimum(tl.maximum(acc_up, -limit), limit)
        h = g * tl.sigmoid(alpha * g) * (u + 1.0)
    tl.store(act_ptr + rows[:, None] * I + n[None, :], h.to(act_ptr.dtype.element_ty),
             mask=out_mask)


@triton.jit
def _grouped_gemm_kernel(
    # pointers
    a_ptr,                      # A rows: (T, K) by token if A_BY_TOKEN else (rows, K)
    b_ptr, b_scales_ptr,        # per expert B[k, n] = b[e*stride_be + k*stride_bk + n*stride_bn]
    bias_ptr,                   # (E, N) or dummy
    rw_ptr,                     # (num_slots,) fp32 routing weights
    dy_ptr,                     # routing_dot: (T, N) upstream gradient
    pre_ptr,                    # glu_backward: (rows, 2N) fp32 gate/up pre-activations
    c_ptr,                      # out: by slot (num_slots, .) if C_BY_SLOT else by row (rows, .)
    sorted_ptr, block_expert_ptr,
    # sizes and strides
    num_slots, N, K, stride_be, stride_bk, stride_bn, stride_c, alpha, limit,
    # meta
    TOP_K: tl.constexpr, A_BY_TOKEN: tl.constexpr, C_BY_SLOT: tl.constexpr,
    HAS_BIAS: tl.constexpr, SCALE_ROWS: tl.constexpr, EPILOGUE: tl.constexpr,
    ACTIVATION: tl.constexpr, MXFP4: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """C = rowscale * (A B_e + bias_e), then by EPILOGUES: 0 "store": store C; 1
    "glu_backward": C is dact, store the GLU backward d(gate, up) into (rows, 2N); 2
    "routing_dot": store rowwise partial dot(C, dy[token]) per slot and column block (c is
    (num_slots, num_n_blocks))."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(sorted_ptr + rows)
    row_ok = slots < num_slots
    tok = (slots // TOP_K).to(tl.int64)
    a_rows = tok if A_BY_TOKEN else rows
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * K + offs_k[None, :]         # (BM, BK)
    # within one expert's weights int32 offsets suffice (N*K < 2^31 for every layer we know)
    b_ptrs = b_ptr + e * stride_be + offs_k[:, None] * stride_bk + n[None, :] * stride_bn
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b_mask = k_ok[:, None] & n_ok[None, :]
        if MXFP4:
            b = _mxfp4_tile(b_ptr, b_scales_ptr, (e * N + n)[None, :], (k0 + offs_k)[:, None], K,
                            b_mask)
        else:
            b = tl.load(b_ptrs, mask=b_mask, other=0.0)                 # (BK, BN)
        acc = tl.dot(a, b.to(a.dtype), acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_bk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + e * N + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if SCALE_ROWS:
        acc *= tl.load(rw_ptr + slots, mask=row_ok, other=0.0)[:, None]
    out_mask = row_ok[:, None] & n_ok[None, :]
    c_rows = slots.to(tl.int64) if C_BY_SLOT else rows
    if EPILOGUE == 0:
        tl.store(c_ptr + c_rows[:, None] * stride_c + n[None, :],
                 acc.to(c_ptr.dtype.element_ty), mask=out_mask)
    elif EPILOGUE == 1:
        gate_cols, up_cols = _glu_rows(n, N, ACTIVATION)
        pre = pre_ptr + rows[:, None] * (2 * N)
        g = tl.load(pre + gate_cols[None, :], mask=out_mask, other=0.0)
        u = tl.load(pre + up_cols[None, :], mask=out_mask, other=0.0)
        if ACTIVATION == 0:
            s = tl.sigmoid(g)
            d_gate = acc * u * s * (1.0 + g * (1.0 - s))
            d_up = acc * g * s
        elif ACTIVATION == 1:
            z = _SQRT_2_OVER_PI * (g + 0.044715 * g * g * g)
            s = tl.sigmoid(2.0 * z)
            dz = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * g * g)
            d_gate = acc * u * (s + g * 2.0 * s * (1.0 - s) * dz)
            d_up = acc * g * s
        else:
            gc = tl.minimum(g, limit)
            uc = tl.minimum(tl.maximum(u, -limit), limit)
            s = tl.sigmoid(alpha * gc)
            # clamp passes the gradient where the input is inside the range (ends included)
            d_gate = tl.where(g <= limit, acc * (uc + 1.0) * (s + gc * alpha * s * (1.0 - s)), 0.0)
            d_up = tl.where((u >= -limit) & (u <= limit), acc * gc * s, 0.0)
        dst = c_ptr + c_rows[:, None] * stride_c
        tl.store(dst + gate_cols[None, :], d_gate.to(c_ptr.dtype.element_ty), mask=out_mask)
        tl.store(dst + up_cols[None, :], d_up.to(c_ptr.dtype.element_ty), mask=out_mask)
    else:
        dy = tl.load(dy_ptr + tok[:, None] * N + n[None, :], mask=out_mask, other=0.0)
        partial = tl.sum(acc * dy.to(tl.float32), axis=1)
        tl.store(c_ptr + c_rows * stride_c + pid_n, partial, mask=row_ok)


@triton.jit
def _grouped_wgrad_kernel(
    l_ptr,                      # L rows (T, N) by token if L_BY_TOKEN else (rows, N)
    r_ptr,                      # R rows (T, K) by token if R_BY_TOKEN else (rows, K)
    rw_ptr,                     # (num_slots,) fp32 routing weights, scale L if SCALE_L
    sorted_ptr, offsets_ptr,
    dw_ptr,                     # out: (E, N, K) fp32
    dbias_ptr,                  # out if HAS_BIAS: (E, N) fp32
    num_slots, N, K,
    TOP_K: tl.constexpr, L_BY_TOKEN: tl.constexpr, R_BY_TOKEN: tl.constexpr,
    SCALE_L: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """dW[e] = sum over expert e's rows of (scale * L)^T R, walked in row order (deterministic);
    dbias[e] = its column sums of scale * L."""
    e = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    n_ok = n < N
    k_ok = ks < K
    start = tl.load(offsets_ptr + e)
    end = tl.load(offsets_ptr + e + 1)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for r0 in range(start, end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        slots = tl.load(sorted_ptr + rows, mask=rows < end, other=num_slots)
        row_ok = slots < num_slots
        tok = (slots // TOP_K).to(tl.int64)
        l_rows = tok if L_BY_TOKEN else rows
        r_rows = tok if R_BY_TOKEN else rows
        left = tl.load(l_ptr + l_rows[:, None] * N + n[None, :],
                       mask=row_ok[:, None] & n_ok[None, :], other=0.0)   # (BM, BN)
        right = tl.load(r_ptr + r_rows[:, None] * K + ks[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # (BM, BK)
        if SCALE_L:
            rw = tl.load(rw_ptr + slots, mask=row_ok, other=0.0)
            left = (left.to(tl.float32) * rw[:, None]).to(right.dtype)
        acc = tl.dot(tl.trans(left.to(right.dtype)), right, acc, input_precision=DOT_PRECISION)
        if HAS_BIAS:
            bias_acc += tl.sum(left.to(tl.float32), axis=0)
    out = dw_ptr + (e * N + n[:, None].to(tl.int64)) * K + ks[None, :]
    tl.store(out, acc, mask=n_ok[:, None] & k_ok[None, :])
    if HAS_BIAS:
        if tl.program_id(2) == 0:
            tl.store(dbias_ptr + e * N + n, bias_acc, mask=n_ok)
