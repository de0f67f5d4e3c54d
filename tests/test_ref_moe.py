"""gptcore.ref's MoE experts, losses, whole MoE layer and MXFP4 against the naive loops of
tests/naive.py: outputs over odd routings, fp64 gradcheck, and hand-computed MXFP4 bytes."""
import pytest
import torch

import gptcore
from gptcore import ref

import naive
from test_ref import call, close, impl, randn  # noqa: F401  (impl is a fixture)


def _routing(kind, T, E, k):
    """indices (T, k) int64 for a named routing pattern, and weights (T, k)."""
    g = torch.Generator().manual_seed(7)
    if kind == "random":
        indices = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    elif kind == "empty_expert":        # expert E-1 gets no token
        indices = torch.stack([torch.randperm(E - 1, generator=g)[:k] for _ in range(T)])
    elif kind == "one_expert":          # every token's first slot goes to expert 1
        indices = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
        indices[:, 0] = 1
        indices[:, 1:][indices[:, 1:] == 1] = 0
    else:                               # "no_expert": some slots are -1
        indices = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
        indices[::2, -1] = -1
    return indices.long(), torch.rand(T, k, generator=g)


# (T, H, I, E, k, routing): T=1, prime E=5 with top_k=E, empty expert, all to one expert, -1.
EXPERT_CASES = [(1, 4, 3, 5, 5, "random"), (6, 8, 5, 5, 2, "empty_expert"),
                (5, 7, 4, 3, 2, "one_expert"), (4, 6, 2, 4, 3, "no_expert"),
                (3, 1, 1, 2, 1, "random")]


def _experts(T, H, I, E, k, routing, biases, dtype=torch.float32):
    indices, weights = _routing(routing, T, E, k)
    x, gate_up, down = randn(T, H, seed=1), randn(E, 2 * I, H, seed=2), randn(E, H, I, seed=3)
    bias = {"gate_up_bias": randn(E, 2 * I, seed=4), "down_bias": randn(E, H, seed=5)} \
        if biases else {}
    tensors = [t.to(dtype) for t in (x, weights, gate_up, down)]
    return tensors, indices, {n: b.to(dtype) for n, b in bias.items()}


@pytest.mark.parametrize("case", EXPERT_CASES, ids=str)
@pytest.mark.parametrize("activation,extra", [("silu", {}), ("gelu", {}), ("gpt_oss", {}),
                                              ("gpt_oss", {"alpha": 1.2, "limit": 0.6})], ids=str)
@pytest.mark.parametrize("biases", [False, True], ids=["nobias", "bias"])
def test_moe_experts_matches_naive(case, activation, extra, biases, impl):
    (x, weights, gate_up, down), indices, bias = _experts(*case, biases)
    y = call(impl, "moe_experts", x, indices, weights, gate_up, down, activation=activation,
             **bias, **extra)
    want = naive.moe_experts(x, indices, weights, gate_up, down, activation, **bias,
                             **{"alpha": 1.702, "limit": 7.0, **extra})
    assert y.dtype == x.dtype and y.shape == x.shape
    # fp32 sums of ~H*I products of N(0,1) values (outputs up to ~50): 1e-4 relative
    close(y, want, atol=1e-4, rtol=1e-4)


def test_moe_experts_only_minus_one_gives_zeros():
    (x, weights, gate_up, down), indices, _ = _experts(3, 4, 2, 3, 2, "random", False)
    y = ref.moe_experts(x, torch.full_like(indices, -1), weights, gate_up, down)
    assert torch.equal(y, torch.zeros_like(x))


@pytest.mark.parametrize("activation", ["silu", "gelu", "gpt_oss"])
def test_moe_experts_gradcheck(activation):
    (x, weights, gate_up, down), indices, bias = _experts(3, 4, 2, 3, 2, "no_expert", True,
                                                          dtype=torch.float64)
    tensors = [t.requires_grad_() for t in (x, weights, gate_up, down, bias["gate_up_bias"],
                                            bias["down_bias"])]
    limit = 1.0   # small enough that the gpt_oss clamps are active for some entries

    def direct(x, w, gu, d, gub, db):
        return ref.moe_experts(x, indices, w, gu, d, activation=activation, gate_up_bias=gub,
                               down_bias=db, limit=limit)

    def as_op(x, w, gu, d, gub, db):
        return torch.ops.gptcore.ref_moe_experts_fwd(x, indices, w, gu, d, gub, db, activation,
                                                     1.702, limit)
    assert torch.autograd.gradcheck(direct, tensors)
    assert torch.autograd.gradcheck(as_op, tensors)


# ----------------------------------------------------------------------------- losses

def test_load_balancing_loss_matches_naive(impl):
    logits = randn(6, 5, seed=2)
    indices = ref.route(logits, 2)[1]
    indices[0, 1] = -1                                   # -1 slots are not counted
    got = call(impl, "load_balancing_loss", logits, indices, 5)
    close(got, naive.load_balancing_loss(logits, indices, 5), atol=1e-6, rtol=1e-6)  # fp32 sums


def test_load_balancing_loss_is_top_k_when_balanced():
    """Hugging Face's convention (documented in ref.py): f_e = count_e / T sums to k."""
    logits = torch.zeros(4, 4)
    indices = torch.tensor([[0, 1], [2, 3], [0, 2], [1, 3]])
    close(ref.load_balancing_loss(logits, indices, 4), torch.tensor(2.0), atol=1e-6, rtol=0)


def test_router_z_loss_matches_naive(impl):
    logits = randn(7, 3, seed=3) * 4
    close(call(impl, "router_z_loss", logits), naive.router_z_loss(logits), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("scoring", ["softmax", "topk_softmax", "sigmoid"])
def test_moe_layer_matches_naive(scoring, impl):
    T, H, I, E, k = 5, 6, 4, 3, 2
    x, router_w, router_b = randn(T, H, seed=1), randn(E, H, seed=2), randn(E, seed=3)
    gate_up, down = randn(E, 2 * I, H, seed=4), randn(E, H, I, seed=5)
    y, aux = call(impl, "moe", x, router_w, gate_up, down, k, router_bias=router_b,
                  scoring=scoring, activation="gelu")
    logits = x.double() @ router_w.double().T + router_b.double()
    weights, indices = naive.route(logits, k, scoring)
    close(aux["router_logits"], logits)
    close(y, naive.moe_experts(x, indices, weights, gate_up, down, "gelu"), atol=1e-4, rtol=1e-4)
    close(aux["load_balancing_loss"], naive.load_balancing_loss(logits, indices, E))
    close(aux["z_loss"], naive.router_z_loss(logits))
    assert aux["tokens_per_expert"].tolist() == [int((indices == e).sum()) for e in range(E)]


# ----------------------------------------------------------------------------- MXFP4

def _wide_weights(R, K, seed=0):
    """Blocks spanning 1e-3..1e3, an all-zero block, negatives and exact e2m1 ties."""
    w = randn(R, K, seed=seed) * torch.logspace(-3, 3, K // 32).repeat_interleave(32)
    w[0, :32] = 0.0
    w[-1, :16] = torch.tensor([0.25, -0.75, 1.25, 1.75, -2.5, 3.5, 5.0, 6.0] * 2)
    return w


@pytest.mark.parametrize("R,K", [(1, 32), (3, 96), (4, 256)])
def test_mxfp4_quantize_matches_naive_bit_for_bit(R, K, impl):
    w = _wide_weights(R, K)
    if impl == "ref":
        blocks, scales = ref.mxfp4_quantize(w)
    else:
        with gptcore.backend("ref"):
            w4 = gptcore.mxfp4_quantize(w)
        blocks, scales = w4.blocks, w4.scales
    want_blocks, want_scales = naive.mxfp4_quantize(w)
    assert torch.equal(scales, want_scales), (scales, want_scales)
    assert torch.equal(blocks, want_blocks), f"{int((blocks != want_blocks).sum())} bytes differ"


def test_mxfp4_hand_computed_bytes():
    w = torch.zeros(4, 32)
    w[0, :2] = torch.tensor([6.0, -0.5])                 # scale 2^0: codes 7, 1|8 -> byte 0x97
    w[1, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0])  # ties -> even codes
    w[2, :2] = torch.tensor([12.0, -3.0])                # scale 2^1: 6 -> 7, -1.5 -> 3|8: 0xB7
    w[3, :2] = torch.tensor([7.0, 0.1])                  # 7/6 -> scale 2^1; 3.5 tie -> code 6
    blocks, scales = ref.mxfp4_quantize(w)
    assert scales.flatten().tolist() == [127, 127, 128, 128]
    assert blocks[0, :2].tolist() == [0x97, 0x00]
    assert blocks[1, :5].tolist() == [0x20, 0x42, 0x64, 0x76, 0x00]
    assert blocks[2, :1].tolist() == [0xB7]
    assert blocks[3, :1].tolist() == [0x06]              # 0.1/2 = 0.05 -> code 0 (high nibble)
    zero_blocks, zero_scales = ref.mxfp4_quantize(torch.zeros(1, 32))
    assert zero_scales.tolist() == [[0]] and not zero_blocks.any()   # all-zero block: 2^-127


def test_mxfp4_dequantize_decodes_every_code(impl):
    codes = torch.arange(16, dtype=torch.uint8)
    blocks = (codes[0::2] | (codes[1::2] << 4)).repeat(2).reshape(1, 16)   # 32 codes
    scales = torch.tensor([[125]], dtype=torch.uint8)                       # 2^-2
    if impl == "ref":
        w = ref.mxfp4_dequantize(blocks, scales, torch.float32)
    else:
        with gptcore.backend("ref"):
            w = gptcore.mxfp4_dequantize(gptcore.MXFP4Tensor(blocks, scales), torch.float32)
    grid = list(naive.E2M1_GRID) + [-g for g in naive.E2M1_GRID]
    assert w.flatten().tolist() == [g / 4 for g in grid] * 2


def test_mxfp4_round_trip_error_is_within_half_a_step():
    w = _wide_weights(3, 128, seed=4)
    blocks, scales = ref.mxfp4_quantize(w)
    back = ref.mxfp4_dequantize(blocks, scales, torch.float32).reshape(3, 4, 32)
    step = torch.exp2(scales.float() - 127).unsqueeze(-1)          # (3, 4, 1): grid unit 2^e
    err = (back - w.reshape(3, 4, 32)).abs() / step
    # the widest gap on the e2m1 grid is 2 (between 4 and 6): the error is at most half of it
    assert float(err.max()) <= 1.0, f"max error {float(err.max())} grid units"


@pytest.mark.parametrize("activation", ["silu", "gelu", "gpt_oss"])
def test_moe_experts_api_gradients_match_naive(activation):
    (x, weights, gate_up, down), indices, bias = _experts(4, 6, 2, 4, 3, "no_expert", True)
    inputs = [x, weights, gate_up, down, bias["gate_up_bias"], bias["down_bias"]]
    ours = [t.clone().requires_grad_() for t in inputs]
    theirs = [t.double().requires_grad_() for t in inputs]
    with gptcore.backend("ref"):
        y = gptcore.moe_experts(ours[0], indices, *ours[1:4], activation=activation,
                                gate_up_bias=ours[4], down_bias=ours[5], limit=1.0)
    want = naive.moe_experts(theirs[0], indices, *theirs[1:4], activation, theirs[4], theirs[5],
                             limit=1.0)
    dy = randn(*y.shape, seed=9)
    y.backward(dy)
    want.backward(dy.double())
    for a, b in zip(ours, theirs):
        close(a.grad, b.grad, atol=1e-4, rtol=1e-4)   # fp32 sums of ~H*I products, as above
