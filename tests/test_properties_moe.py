"""Property-based tests of routing, the MoE experts and MXFP4 with hypothesis: every backend
against gptcore.ref (and ref against tests/naive.py), forward and backward, over drawn token
counts (0 and 1 included), expert counts, top-k, -1 slots, experts without tokens, activations,
biases, dtypes and memory layouts. Profiles ("ci", "long") are in conftest.py."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gptcore
import naive
from checks import close_scaled
from gptcore import ref

# Scaled max-error bounds per dtype, as in test_properties.py: fp32 differs in summation order
# only; bf16 / fp16 outputs are rounded once after fp32 accumulation (2^-8, 2^-11 relative).
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 4e-3}
TRITON_EXAMPLES = max(4, settings.default.max_examples // 2)   # the interpreter is slow


def layout(t, transposed):
    """t itself, or the same values in a transposed (column-major) buffer."""
    return t.t().contiguous().t() if transposed and t.dim() == 2 else t


@st.composite
def route_cases(draw, dtypes=(torch.float32,)):
    E = draw(st.one_of(st.integers(1, 9), st.integers(16, 40)))   # 16+: the wide top-k paths
    scoring = draw(st.sampled_from(["softmax", "topk_softmax", "sigmoid"]))
    return dict(T=draw(st.integers(0, 7)), E=E, top_k=draw(st.integers(1, E)), scoring=scoring,
                renormalize=draw(st.booleans()),
                bias=scoring == "sigmoid" and draw(st.booleans()),
                dtype=draw(st.sampled_from(dtypes)), scale=draw(st.sampled_from([1.0, 30.0])),
                transposed=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def route_call(backend, case):
    gen = torch.Generator().manual_seed(case["seed"])
    logits = torch.randn(case["T"], case["E"], generator=gen) * case["scale"]
    logits = layout(logits.to(case["dtype"]), case["transposed"]).requires_grad_()
    bias = torch.randn(case["E"], generator=gen) if case["bias"] else None
    dweights = torch.randn(case["T"], case["top_k"], generator=gen)
    with gptcore.backend(backend):
        weights, indices = gptcore.route(logits, case["top_k"], scoring=case["scoring"],
                                         renormalize=case["renormalize"], bias=bias)
    (weights * dweights).sum().backward()
    return weights.detach(), indices, logits.grad


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@settings(max_examples=TRITON_EXAMPLES)
@given(route_cases())
def test_route_matches_ref(backend, case):
    weights, indices, dlogits = route_call(backend, case)
    ref_weights, ref_indices, ref_dlogits = route_call("ref", case)
    tol = TOL[case["dtype"]]
    assert torch.equal(indices, ref_indices), "chosen experts differ"
    close_scaled("weights", weights, ref_weights, tol)
    close_scaled("dlogits", dlogits, ref_dlogits, tol)


@given(route_cases())
def test_ref_route_matches_naive_loops(case):
    case["scale"] = 1.0            # x30 logits: fp32 softmax ties that fp64 breaks differently
    weights, indices, _ = route_call("ref", case)
    gen = torch.Generator().manual_seed(case["seed"])
    logits = torch.randn(case["T"], case["E"], generator=gen)
    bias = torch.randn(case["E"], generator=gen) if case["bias"] else None
    if case["T"] == 0:
        assert weights.shape == (0, case["top_k"]) and indices.shape == (0, case["top_k"])
        return
    want_w, want_i = naive.route(logits, case["top_k"], case["scoring"], case["renormalize"],
                                 bias)
    assert torch.equal(indices, want_i)
    close_scaled("weights", weights, want_w, 1e-5)   # fp32 against fp64


@st.composite
def expert_cases(draw, dtypes=(torch.float32,)):
    if draw(st.booleans()):
        # decode-like: a few rows per expert (the C++ register kernels, one interpreter block)
        E, T = draw(st.integers(1, 4)), draw(st.integers(0, 6))
    else:
        # 130-300 tokens on 1-2 experts, so some expert gets 65+ rows: past the C++ kernels'
        # 64-row limit (sgemm), at times past 256 (one whole-expert product); many interpreter
        # blocks per expert
        E, T = draw(st.integers(1, 2)), draw(st.integers(130, 300))
    return dict(T=T, H=draw(st.sampled_from([1, 3, 8, 16])),
                I=draw(st.sampled_from([1, 2, 5, 16])), E=E, top_k=draw(st.integers(1, min(E, 3))),
                activation=draw(st.sampled_from(["silu", "gelu", "gpt_oss"])),
                biases=draw(st.booleans()), no_expert=draw(st.booleans()),
                dtype=draw(st.sampled_from(dtypes)), transposed=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


def expert_inputs(case):
    gen = torch.Generator().manual_seed(case["seed"])
    T, H, I, E, k, dtype = (case[n] for n in ("T", "H", "I", "E", "top_k", "dtype"))
    indices = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)]) if T else \
        torch.zeros(0, k, dtype=torch.long)
    if case["no_expert"] and T:
        indices[0, -1] = -1          # a slot with no expert
    x = layout(torch.randn(T, H, generator=gen).to(dtype), case["transposed"])
    tensors = dict(x=x, weights=torch.rand(T, k, generator=gen).to(dtype),
                   gate_up_proj=torch.randn(E, 2 * I, H, generator=gen).to(dtype) / H ** 0.5,
                   down_proj=torch.randn(E, H, I, generator=gen).to(dtype) / I ** 0.5)
    if case["transposed"]:   # weights stored (E, H, 2I) and viewed transposed, as Linear.T would
        tensors["gate_up_proj"] = tensors["gate_up_proj"].transpose(1, 2).contiguous() \
            .transpose(1, 2)
    if case["biases"]:
        tensors["gate_up_bias"] = torch.randn(E, 2 * I, generator=gen).to(dtype)
        tensors["down_bias"] = torch.randn(E, H, generator=gen).to(dtype)
    return indices, tensors, torch.randn(T, H, generator=gen).to(dtype)


def experts_call(backend, case):
    indices, tensors, dy = expert_inputs(case)
    leaves = {n: t.detach().requires_grad_() for n, t in tensors.items()}
    with gptcore.backend(backend):
        y = gptcore.moe_experts(leaves["x"], indices, leaves["weights"], leaves["gate_up_proj"],
                                leaves["down_proj"], activation=case["activation"],
                                gate_up_bias=leaves.get("gate_up_bias"),
                                down_bias=leaves.get("down_bias"))
    y.backward(dy)
    return y.detach(), {n: t.grad for n, t in leaves.items()}


def compare_experts(backend, case):
    y, grads = experts_call(backend, case)
    ref_y, ref_grads = experts_call("ref", case)
    tol = TOL[case["dtype"]]
    close_scaled("y", y, ref_y, tol)
    for name, g in grads.items():
        assert g is not None and g.shape == ref_grads[name].shape, f"d{name}: missing or misshaped"
        close_scaled(f"d{name}", g, ref_grads[name], tol)


@given(expert_cases(dtypes=(torch.float32, torch.bfloat16, torch.float16)))
def test_cpp_experts_match_ref(case):
    compare_experts("cpp", case)


@settings(max_examples=TRITON_EXAMPLES)
@given(expert_cases())
def test_triton_experts_match_ref(case):
    compare_experts("triton", case)


@given(expert_cases())
def test_ref_experts_match_naive_loops(case):
    y, _ = experts_call("ref", case)
    indices, tensors, _ = expert_inputs(case)
    if case["T"] == 0:
        assert y.shape == (0, case["H"])
        return
    want = naive.moe_experts(tensors["x"], indices, tensors["weights"], tensors["gate_up_proj"],
                             tensors["down_proj"], case["activation"],
                             tensors.get("gate_up_bias"), tensors.get("down_bias"))
    close_scaled("y", y, want, 1e-5)                # fp32 against fp64


@given(st.integers(0, 3), st.integers(0, 2), st.sampled_from([32, 64, 96]),
       st.sampled_from([1.0, 30.0, 1e-30]), st.integers(0, 2**16))
def test_cpp_mxfp4_matches_ref(rows, lead, K, scale, seed):
    w = torch.randn(lead + 1, rows, K, generator=torch.Generator().manual_seed(seed)) * scale
    with gptcore.backend("cpp"):
        w4 = gptcore.mxfp4_quantize(w)
        back = gptcore.mxfp4_dequantize(w4, torch.float32)
    blocks, scales = ref.mxfp4_quantize(w)
    assert torch.equal(w4.blocks, blocks) and torch.equal(w4.scales, scales)
    assert torch.equal(back, ref.mxfp4_dequantize(blocks, scales, torch.float32))
