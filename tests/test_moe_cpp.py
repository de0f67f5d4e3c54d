"""The C++ MoE ops (route, moe_experts fwd/bwd/mxfp4) against gptcore.ref and
deliberately dumb per-token loops, on both the AVX2 and the portable paths."""
import pytest
import torch

import gptcore
from gptcore import ref

pytest.importorskip("gptcore._C", reason="the C++ extension is not built")
ops = torch.ops.gptcore
assert gptcore.available_backends()["cpp"]  # loads the extension and registers its fakes

# fp32 GEMMs in a different summation order (MKL tiles vs torch's matmul), K <= 96, values O(1):
# differences are a few fp32 ulps of the row sums.
ATOL, RTOL = 2e-5, 2e-5


def assert_close(got, want, atol=ATOL, rtol=RTOL, what=""):
    diff = (got.float() - want.float()).abs().max().item() if got.numel() else 0.0
    assert torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol), \
        f"{what}: max |diff| = {diff:.3g}"


# ----------------------------------------------------------------------------- routing

def dumb_route(logits, k, scoring, renormalize, bias):
    """One token at a time, selection by repeated arg-max (first index wins ties)."""
    weights, indices = [], []
    for row in logits.double():
        if scoring == "softmax":
            score = torch.softmax(row, 0)
            choice = score
        elif scoring == "topk_softmax":
            score = choice = row
        else:
            score = torch.sigmoid(row)
            choice = score + (bias.double() if bias is not None else 0)
        chosen, left = [], choice.clone()
        for _ in range(k):
            e = int(torch.argmax(left))  # argmax returns the first maximum
            chosen.append(e)
            left[e] = -float("inf")
        w = score[chosen]
        if scoring == "topk_softmax":
            w = torch.softmax(w, 0)
        elif renormalize:
            w = w / w.sum()
        weights.append(w)
        indices.append(chosen)
    return torch.stack(weights).float(), torch.tensor(indices)


ROUTE_CASES = [(s, r, b) for s in ("softmax", "topk_softmax", "sigmoid") for r in (True, False)
               for b in ((False, True) if s == "sigmoid" else (False,))]


@pytest.mark.parametrize("scoring,renormalize,with_bias", ROUTE_CASES)
@pytest.mark.parametrize("T,E,k", [(1, 8, 2), (33, 7, 1), (33, 7, 7), (5, 13, 3)])
def test_route_matches_ref_and_loop(scoring, renormalize, with_bias, T, E, k):
    torch.manual_seed(T * E + k)
    logits = torch.randn(T, E)
    logits[0, : E // 2] = 0.5          # exact ties: the lower expert index must win
    bias = torch.randn(E) / 4 if with_bias else None
    w, idx = ops.route(logits, k, scoring, renormalize, bias)
    w_ref, idx_ref = ref.route(logits, k, scoring=scoring, renormalize=renormalize, bias=bias)
    w_dumb, idx_dumb = dumb_route(logits, k, scoring, renormalize, bias)
    assert torch.equal(idx, idx_ref) and torch.equal(idx, idx_dumb)
    # softmax / exp in a different order than torch's: a few fp32 ulps
    assert_close(w, w_ref, 1e-6, 1e-5, "weights vs ref")
    assert_close(w, w_dumb, 1e-6, 1e-5, "weights vs loop")


@pytest.mark.parametrize("scoring,renormalize,with_bias", ROUTE_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_route_grad_matches_ref(scoring, renormalize, with_bias, dtype):
    torch.manual_seed(1)
    T, E, k = 17, 7, 3
    logits = torch.randn(T, E).to(dtype).requires_grad_()
    bias = torch.randn(E) / 4 if with_bias else None
    dw = torch.randn(T, k)
    grads = []
    for backend in ("cpp", "ref"):
        with gptcore.backend(backend):
            w, _ = gptcore.route(logits, k, scoring=scoring, renormalize=renormalize, bias=bias)
            grads.append(torch.autograd.grad(w, logits, dw)[0])
    assert grads[0].dtype == dtype
    # fp32: ulps of exp and the dot products; bf16 logits: the gradient is rounded to bf16
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(grads[0], grads[1], tol, tol, "dlogits")


# ----------------------------------------------------------------------------- dispatch index

def dumb_index(indices, E, block_m):
    """The format of docs/moe-index-format.md, one expert and one slot at a time."""
    flat = indices.flatten().tolist()
    S = len(flat)
    sorted_slots, offsets, blocks = [], [0], []
    for e in range(E):
        mine = [s for s in range(S) if flat[s] == e]
        pad = -len(mine) % block_m
        sorted_slots += mine + [S] * pad
        blocks += [e] * ((len(mine) + pad) // block_m)
        offsets.append(len(sorted_slots))
    length = S + E * (block_m - 1)
    sorted_slots += [S] * (length - len(sorted_slots))
    blocks += [-1] * (-(-length // block_m) - len(blocks))
    return [torch.tensor(v, dtype=torch.int64) for v in (sorted_slots, offsets, blocks)]


@pytest.mark.parametrize("block_m", [1, 4, 16])
@pytest.mark.parametrize("T,k,E", [(1, 2, 8), (37, 2, 5), (50, 3, 11), (6, 1, 3)])
def test_ref_moe_index_equals_a_dumb_loop(block_m, T, k, E):
    """gptcore.ref.moe_index, the oracle of the Triton index builder (tests/test_moe_triton.py);
    the C++ builder is proven through every experts test below."""
    torch.manual_seed(T + k + E)
    indices = torch.randint(0, E, (T, k))
    indices[indices == E - 1] = 0        # expert E-1 gets no tokens
    indices[0, 0] = -1                   # "no expert"
    for r, d in zip(ref.moe_index(indices, E, block_m), dumb_index(indices, E, block_m)):
        assert torch.equal(r, d)


# ----------------------------------------------------------------------------- experts

def make_experts(T, H, I, E, k, dtype=torch.float32, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g)
    w, idx = ref.route(torch.randn(T, E, generator=g), k)
    gu = (torch.randn(E, 2 * I, H, generator=g) / H**0.5).to(dtype)
    dn = (torch.randn(E, H, I, generator=g) / I**0.5).to(dtype)
    gub = torch.randn(E, 2 * I, generator=g).to(dtype) if bias else None
    db = torch.randn(E, H, generator=g).to(dtype) if bias else None
    return x, idx, w, gu, dn, gub, db


def dumb_experts(x, idx, w, gu, dn, gub, db, activation):
    """y[t] = sum_j w[t, j] * expert_{idx[t, j]}(x[t]) in fp64, one token and slot at a time."""
    y = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            if e < 0:
                continue
            h = gu[e].double() @ x[t].double()
            if gub is not None:
                h = h + gub[e].double()
            a = ref.glu_activation(h[None], activation)[0]
            o = dn[e].double() @ a
            if db is not None:
                o = o + db[e].double()
            y[t] += w[t, j].double() * o
    return y


ACTS = ["silu", "gelu", "gpt_oss"]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("bias", [False, True])
# T=400 E=3 k=2: every expert has >= 256 rows (whole-expert GEMMs); T=600 E=5 k=2: some do.
@pytest.mark.parametrize("T,H,I,E,k", [(1, 32, 24, 4, 2), (29, 40, 72, 7, 2), (11, 16, 8, 5, 5),
                                       (64, 24, 40, 3, 1), (400, 40, 72, 3, 2),
                                       (600, 16, 24, 5, 2)])
def test_experts_forward(isa, activation, bias, T, H, I, E, k):
    x, idx, w, gu, dn, gub, db = make_experts(T, H, I, E, k, bias=bias)
    if T > 1:
        idx[1, 0] = -1
    y = ops.moe_experts_fwd(x, idx, w, gu, dn, gub, db, activation, 1.702, 7.0)
    assert_close(y, ref.moe_experts(x, idx, w, gu, dn, activation=activation, gate_up_bias=gub,
                                    down_bias=db), what="vs ref")
    # fp32 kernel vs an fp64 loop: fp32 rounding of sums over H and I terms
    assert_close(y, dumb_experts(x, idx, w, gu, dn, gub, db, activation), 1e-4, 1e-4, "vs loop")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ACTS)
def test_experts_half_weights(isa, dtype, activation):
    x, idx, w, gu, dn, gub, db = make_experts(19, 48, 40, 6, 2, dtype=dtype, bias=True)
    y = ops.moe_experts_fwd(x, idx, w, gu, dn, gub, db, activation, 1.702, 7.0)
    # both convert the same half weights to fp32 and compute in fp32
    assert_close(y, ref.moe_experts(x, idx, w, gu, dn, activation=activation, gate_up_bias=gub,
                                    down_bias=db), what=str(dtype))
    yh = ops.moe_experts_fwd(x.to(dtype), idx, w, gu, dn, gub, db, activation, 1.702, 7.0)
    want = ref.moe_experts(x.to(dtype), idx, w, gu, dn, activation=activation, gate_up_bias=gub,
                           down_bias=db)
    assert yh.dtype == dtype
    # outputs rounded to the half type: one ulp of it (2^-8 bf16, 2^-11 fp16) relative; bf16
    # x and weights also round the gate_up products to bf16 (torch's bf16 matmul): 2^-6 at |h|<=4
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-2
    assert_close(yh, want, tol, tol, "half activations")


def test_experts_routing_extremes(isa):
    """All tokens to one expert, experts without tokens, whole rows of -1."""
    x, idx, w, gu, dn, gub, db = make_experts(300, 32, 24, 6, 2, bias=True)
    for case in (torch.zeros_like(idx), torch.full_like(idx, 5), torch.full_like(idx, -1)):
        case = case.clone()
        case[:, 1] = torch.where(case[:, 1] >= 0, (case[:, 1] + 1) % 6, -1)
        y = ops.moe_experts_fwd(x, case, w, gu, dn, gub, db, "silu", 1.702, 7.0)
        assert_close(y, ref.moe_experts(x, case, w, gu, dn, gate_up_bias=gub, down_bias=db),
                     what=f"indices {case[0].tolist()}")
    assert ops.moe_experts_fwd(x, torch.full_like(idx, -1), w, gu, dn, gub, db, "silu", 1.702,
                               7.0).abs().max() == 0


def test_experts_deterministic():
    x, idx, w, gu, dn, _, _ = make_experts(257, 64, 96, 4, 2)
    a = ops.moe_experts_fwd(x, idx, w, gu, dn, None, None, "silu", 1.702, 7.0)
    b = ops.moe_experts_fwd(x, idx, w, gu, dn, None, None, "silu", 1.702, 7.0)
    assert torch.equal(a, b)


def test_experts_rejects_out_of_range():
    x, idx, w, gu, dn, _, _ = make_experts(4, 16, 8, 3, 2)
    idx[2, 1] = 3
    with pytest.raises(ValueError, match="indices"):
        ops.moe_experts_fwd(x, idx, w, gu, dn, None, None, "silu", 1.702, 7.0)
    with pytest.raises(ValueError, match="indices"):
        gptcore.moe_experts(x, idx, w, gu, dn)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,E,k", [(1, 4, 2), (23, 5, 2), (9, 3, 3)])
def test_experts_grads(activation, bias, dtype, T, E, k):
    x, idx, w, gu, dn, gub, db = make_experts(T, 24, 16, E, k, dtype=dtype, bias=bias)
    if T > 2:
        idx[2, 0] = -1
    leaves = [t.requires_grad_() for t in (x, w, gu, dn, gub, db) if t is not None]
    dy = torch.randn(T, 24)
    results = []
    for backend in ("cpp", "ref"):
        with gptcore.backend(backend):
            y = gptcore.moe_experts(x, idx, w, gu, dn, activation=activation, gate_up_bias=gub,
                                    down_bias=db)
            results.append((y, *torch.autograd.grad(y, leaves, dy)))
    # fp32: summation order; bf16 weights: weight gradients are rounded to bf16 (2^-8 relative)
    tol = ATOL * 5 if dtype == torch.float32 else 1e-2
    for name, got, want in zip(("y", "dx", "dw", "dgu", "ddown", "dgub", "ddb"), *results):
        assert got.dtype == want.dtype, name
        assert_close(got, want, tol, tol, name)


# ----------------------------------------------------------------------------- MXFP4 experts

@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("T,E,k", [(1, 4, 2), (40, 5, 2)])
def test_experts_mxfp4_matches_dequantised(isa, activation, T, E, k):
    x, idx, w, gu, dn, gub, db = make_experts(T, 64, 32, E, k, bias=True)
    gu4, dn4 = ref.mxfp4_quantize(gu), ref.mxfp4_quantize(dn)
    y = ops.moe_experts_mxfp4(x, idx, w, *gu4, *dn4, gub, db, activation, 1.702, 7.0)
    want = ref.moe_experts(x, idx, w, ref.mxfp4_dequantize(*gu4, torch.float32),
                           ref.mxfp4_dequantize(*dn4, torch.float32), activation=activation,
                           gate_up_bias=gub, down_bias=db)
    assert_close(y, want, what="mxfp4 vs dequantised")  # same fp32 weights, same fp32 maths
    with torch.no_grad():
        public = gptcore.moe_experts(x, idx, w, gptcore.mxfp4_quantize(gu),
                                     gptcore.mxfp4_quantize(dn), activation=activation,
                                     gate_up_bias=gub, down_bias=db)
    assert_close(public, want, what="gptcore.moe_experts with MXFP4Tensor")


def test_mxfp4_round_trip_hand_computed():
    """One block by hand from the OCP MX spec: max |w| = 12 -> scale 2^ceil(log2(12/6)) = 2
    (byte 128); w/2 rounds to the e2m1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}, ties to the even code."""
    w = torch.zeros(32)
    w[:10] = torch.tensor([12.0, -12.0, 1.0, 1.5, 2.5, 3.5, 5.0, 7.0, 0.5, -9.0])
    # w/2 = 6, -6, .5, .75 (tie 0.5|1.0 -> code 2 = 1.0), 1.25 (tie 1|1.5 -> code 2 = 1.0),
    # 1.75 (tie 1.5|2 -> code 4 = 2.0), 2.5 (tie 2|3 -> code 4 = 2.0), 3.5 (tie 3|4 -> code 6 = 4),
    # .25 (tie 0|.5 -> code 0 = 0), -4.5 (nearest 4)
    want = torch.zeros(32)
    want[:10] = torch.tensor([12.0, -12.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 0.0, -8.0])
    w4 = gptcore.mxfp4_quantize(w[None])
    assert w4.scales.flatten().tolist() == [128]
    assert w4.blocks[0, 0].item() == 0x7 | (0xF << 4)  # +6 in the low nibble, -6 in the high
    assert torch.equal(gptcore.mxfp4_dequantize(w4, torch.float32)[0], want)
