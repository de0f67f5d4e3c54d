"""gptcore.moe_experts reads K-major expert weights in place: transformers stores gpt-oss's
experts as gate_up_proj (E, H, 2I) and down_proj (E, I, H), and hands gptcore their transposed
views. Outputs and gradients equal the contiguous layout's; no weight is copied per call."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import gptcore
from gptcore import ref

pytest.importorskip("gptcore._C", reason="the C++ extension is not built")


def allocated_bytes(fn):
    """Bytes allocated while fn() runs (every allocation, freed or not), from the profiler."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(e.self_cpu_memory_usage for e in prof.events()
               if e.name != "[memory]" and e.self_cpu_memory_usage > 0)


def experts(E, H, I, dtype, bias):
    """K-major storage (as transformers holds gpt-oss) and gptcore-layout views of it."""
    gate_up = torch.randn(E, H, 2 * I).div(H ** 0.5).to(dtype)      # (E, H, 2I) storage
    down = torch.randn(E, I, H).div(I ** 0.5).to(dtype)             # (E, I, H) storage
    biases = {}
    if bias:
        biases = {"gate_up_bias": torch.randn(E, 2 * I).to(dtype),
                  "down_bias": torch.randn(E, H).to(dtype)}
    return gate_up, down, biases


# T=1 and 5: column tiles (decode); T=300 on one expert: the whole-expert at::mm (>= 256 rows).
CASES = [(1, 6, 2), (5, 6, 3), (300, 1, 1)]


@pytest.mark.parametrize("T,E,k", CASES)
@pytest.mark.parametrize("activation", ["silu", "gpt_oss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kmajor_forward_and_backward_match_contiguous(isa, T, E, k, activation, dtype):
    torch.manual_seed(T + E)
    H, I = 48, 24
    gate_up, down, biases = experts(E, H, I, dtype, bias=activation == "gpt_oss")
    x = torch.randn(T, H).to(dtype)
    indices = torch.stack([torch.randperm(E)[:k] for _ in range(T)])
    indices[0, -1] = -1                                              # a dropped slot
    weights = torch.rand(T, k)
    kw = dict(activation=activation, **biases)

    dy = torch.randn(T, H).to(dtype)     # one upstream gradient for both layouts: a dy made
                                         # from each y would carry their forward differences

    def run(gu, dn):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weights, gu, dn)]
        y = gptcore.moe_experts(leaves[0], indices, leaves[1], leaves[2], leaves[3], **kw)
        y.backward(dy)
        return y, [leaf.grad for leaf in leaves]

    gu_t, dn_t = gate_up.transpose(1, 2), down.transpose(1, 2)       # (E, 2I, H), (E, H, I) views
    y_k, g_k = run(gu_t, dn_t)
    y_c, g_c = run(gu_t.contiguous(), dn_t.contiguous())
    want = ref.moe_experts(x.double(), indices, weights.double(), gu_t.double(), dn_t.double(),
                           activation=activation,
                           **{n: b.double() for n, b in biases.items()})
    # fp32: GEMMs in another summation order (NN vs NT), K <= 48: a few ulps of O(1) sums.
    # bf16: both layouts round h and y to bf16 (2^-8 relative) at different points.
    tol = dict(atol=3e-5, rtol=3e-5) if dtype == torch.float32 else dict(atol=5e-2, rtol=2e-2)
    torch.testing.assert_close(y_k, y_c, **tol)
    torch.testing.assert_close(y_k.double(), want, **tol)
    for name, a, b in zip(("x", "weights", "gate_up_proj", "down_proj"), g_k, g_c):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{name}: {m}")
    # the weight gradients come back in the weights' K-major layout: no copy in autograd
    assert g_k[2].transpose(1, 2).is_contiguous() and g_k[3].transpose(1, 2).is_contiguous()


# Odd H and I (a k pair cut short, column tails under 32, strips past the last column), 1 to 5
# rows per expert (every register block of activation rows and its remainders), I=150: two
# column tiles of 128 with a tail: the fused bf16 kernel at decode sizes.
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("I", [45, 150])
@pytest.mark.parametrize("activation", ["silu", "gpt_oss"])
@pytest.mark.parametrize("bias_dtype", [torch.bfloat16, torch.float32])
def test_kmajor_bf16_odd_shapes_match_reference(isa, T, I, activation, bias_dtype):
    torch.manual_seed(T)
    E, H, k = 2, 37, 2
    gate_up, down, biases = experts(E, H, I, torch.bfloat16, bias=True)
    biases = {n: b.to(bias_dtype) for n, b in biases.items()}
    x = torch.randn(T, H).bfloat16()
    indices = torch.stack([torch.randperm(E)[:k] for _ in range(T)])
    weights = torch.rand(T, k)
    gu_t, dn_t = gate_up.transpose(1, 2), down.transpose(1, 2)
    y = gptcore.moe_experts(x, indices, weights, gu_t, dn_t, activation=activation, **biases)
    want = ref.moe_experts(x.double(), indices, weights.double(), gu_t.double(), dn_t.double(),
                           activation=activation, **{n: b.double() for n, b in biases.items()})
    # bf16: the GLU output is rounded to bf16 (2^-8 relative) before the down products, and y
    # on return; sums of <= 150 products in fp32 add nothing visible next to that.
    torch.testing.assert_close(y.double(), want, atol=5e-2, rtol=2e-2)


@pytest.mark.parametrize("activation", ["silu", "gpt_oss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kmajor_weights_are_not_copied(isa, activation, dtype):
    torch.manual_seed(0)
    E, H, I, T, k = 16, 256, 128, 1, 4
    gate_up, down, biases = experts(E, H, I, dtype, bias=activation == "gpt_oss")
    x = torch.randn(T, H).to(dtype)
    indices, weights = torch.randperm(E)[:k].view(T, k), torch.rand(T, k)

    def call(gu, dn):
        return lambda: gptcore.moe_experts(x, indices, weights, gu, dn, activation=activation,
                                           **biases)

    in_place = allocated_bytes(call(gate_up.transpose(1, 2), down.transpose(1, 2)))
    # A layout the kernels cannot read in place is copied: the measurement sees copies.
    odd = gate_up.permute(2, 0, 1).contiguous().permute(1, 0, 2)    # (E, 2I, H), strides (H, E*H, 1)
    copied = allocated_bytes(call(odd, down.transpose(1, 2)))
    weight_bytes = gate_up.nbytes
    assert copied >= weight_bytes
    # Activations only: x gathered per slot, h (2I), the GLU output (I) and y, per slot.
    activation_bytes = 4 * T * k * (3 * H + 3 * I) + 4096
    if dtype == torch.bfloat16 and isa != "avx512_bf16":
        # Without bf16 dot products bf16 runs per-expert ATen ops (the GLU's clamp, add, mul,
        # sigmoid each make an activation: twice the bound) on fp32 biases, converted per call.
        # The fused bf16 kernel reads the biases in place and meets the plain bound.
        activation_bytes = 2 * activation_bytes + 4 * sum(b.numel() for b in biases.values())
    assert in_place <= activation_bytes, (in_place, activation_bytes, weight_bytes)
