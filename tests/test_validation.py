"""Bad input to the public API: one test per check of docs/api.md. Each asserts the
exception type and that the message names the argument (and, where it matters, the value)."""
import pytest
import torch

import gptcore


def _qkv(B=1, Hq=4, Hkv=2, Sq=3, Sk=5, D=8):
    return torch.randn(B, Hq, Sq, D), torch.randn(B, Hkv, Sk, D), torch.randn(B, Hkv, Sk, D)


def _varlen(cu_q=(0, 2, 5), cu_k=(0, 3, 4), max_q=3, max_k=3):
    q, k, v = torch.randn(cu_q[-1], 2, 4), torch.randn(cu_k[-1], 1, 4), torch.randn(cu_k[-1], 1, 4)
    return (q, k, v, torch.tensor(cu_q, dtype=torch.int32), torch.tensor(cu_k, dtype=torch.int32),
            max_q, max_k)


def _experts(T=3, H=4, I=2, E=3, k=2):
    return (torch.randn(T, H), torch.zeros(T, k, dtype=torch.int64), torch.rand(T, k),
            torch.randn(E, 2 * I, H), torch.randn(E, H, I))


@pytest.fixture(autouse=True)
def _ref_backend():
    with gptcore.backend("ref"):
        yield


# ----------------------------------------------------------------------------- attention

def test_attention_wrong_rank():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"q: expected a 4-D tensor, got shape \(4, 3, 8\)"):
        gptcore.attention(q[0], k, v)


def test_attention_heads_not_divisible():
    q, k, v = _qkv(Hq=4, Hkv=3)
    with pytest.raises(ValueError, match=r"k: expected a kv head count dividing q's 4 heads, "
                                         r"got 3"):
        gptcore.attention(q, k, v)


@pytest.mark.parametrize("D", [0, 257])
def test_attention_head_dim_out_of_range(D):
    q, k, v = _qkv(D=D)
    with pytest.raises(ValueError, match=rf"q: expected head dim D in \[1, 256\], got D={D}"):
        gptcore.attention(q, k, v)


def test_attention_dtype_mismatch():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=r"q/k/v: expected one dtype, got .*k=torch.float16"):
        gptcore.attention(q, k.half(), v)


def test_attention_unsupported_dtype():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=r"q: expected dtype in .* got torch.int64"):
        gptcore.attention(q.long(), k.long(), v.long())


def test_attention_device_mismatch():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"v: expected a tensor on cpu .* got one on meta"):
        gptcore.attention(q, k, v.to("meta"))


def test_attention_k_v_shapes_differ():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"k, v: expected equal shapes"):
        gptcore.attention(q, k, v[:, :, :2])


@pytest.mark.parametrize("window", [0, -3])
def test_attention_window_below_one(window):
    with pytest.raises(ValueError, match=rf"window: expected an int >= 1, got {window}"):
        gptcore.attention(*_qkv(), window=window)


@pytest.mark.parametrize("window,error,match", [
    ((1, 2, 3), ValueError, r"window: expected \(left, right\), got \(1, 2, 3\)"),
    ((-2, 0), ValueError, r"window\[left\]: expected an int >= -1, got -2"),
    ((0, -5), ValueError, r"window\[right\]: expected an int >= -1, got -5"),
    ((1.5, 0), TypeError, r"window\[left\]: expected an int, got float"),
    ("3", TypeError, r"window: expected an int, got str"),
])
def test_attention_bad_window(window, error, match):
    with pytest.raises(error, match=match):
        gptcore.attention(*_qkv(), window=window)


def test_attention_bad_sinks_shape():
    with pytest.raises(ValueError, match=r"sinks: expected shape \(4,\), got \(2,\)"):
        gptcore.attention(*_qkv(), sinks=torch.zeros(2))


@pytest.mark.parametrize("name", ["softcap", "scale"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("inf")])
def test_attention_nonpositive_softcap_and_scale(name, value):
    with pytest.raises(ValueError, match=rf"{name}: expected a finite number > 0"):
        gptcore.attention(*_qkv(), **{name: value})


def test_attention_causal_not_bool():
    with pytest.raises(TypeError, match=r"causal: expected a bool, got int"):
        gptcore.attention(*_qkv(), causal=1)


@pytest.mark.parametrize("fn", ["attention", "attention_varlen"])
def test_attention_non_tensor_input(fn):
    args = list(_qkv() if fn == "attention" else _varlen())
    args[0] = args[0].tolist()
    with pytest.raises(TypeError, match=r"q: expected a torch.Tensor, got list"):
        getattr(gptcore, fn)(*args)


def test_fully_masked_rows_give_zeros_not_nan_forward_and_gradient():
    q, k, v = (t.requires_grad_() for t in _qkv(Sq=6, Sk=2))     # causal: rows 0..3 see no key
    out, lse = gptcore.attention(q, k, v, causal=True, return_lse=True)
    assert torch.equal(out[:, :, :4], torch.zeros_like(out[:, :, :4]))
    assert torch.isneginf(lse[:, :, :4]).all()
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, :4], torch.zeros_like(q.grad[:, :, :4]))


# ----------------------------------------------------------------------------- varlen

@pytest.mark.parametrize("cu_q,match", [
    ((0, 3, 2, 5), r"cu_seqlens_q: expected non-decreasing offsets, got \[0, 3, 2, 5\]"),
    ((1, 2, 5), r"cu_seqlens_q: expected offsets starting at 0, got 1"),
])
def test_varlen_bad_offsets(cu_q, match):
    args = list(_varlen())
    args[3] = torch.tensor(cu_q, dtype=torch.int32)
    with pytest.raises(ValueError, match=match):
        gptcore.attention_varlen(*args)


def test_varlen_last_offset_not_total():
    args = list(_varlen())
    args[4] = torch.tensor([0, 3, 3], dtype=torch.int32)        # k holds 4 tokens
    with pytest.raises(ValueError, match=r"cu_seqlens_k: expected the last offset to equal the "
                                         r"packed length 4, got 3"):
        gptcore.attention_varlen(*args)


def test_varlen_offsets_of_different_sizes():
    args = list(_varlen())
    args[4] = torch.tensor([0, 1, 3, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cu_seqlens_k: expected 3 offsets like cu_seqlens_q, "
                                         r"got 4"):
        gptcore.attention_varlen(*args)


def test_varlen_offsets_wrong_dtype():
    args = list(_varlen())
    args[3] = args[3].long()
    with pytest.raises(TypeError, match=r"cu_seqlens_q: expected dtype in \['torch.int32'\]"):
        gptcore.attention_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
def test_varlen_max_seqlen_too_small(which):
    args = list(_varlen())
    args[5 if which == "q" else 6] = 2                          # the longest sequences are 3
    with pytest.raises(ValueError, match=rf"max_seqlen_{which}: expected at least the longest "
                                         rf"sequence \(3\), got 2"):
        gptcore.attention_varlen(*args)


def test_varlen_zero_length_sequence_accepted():
    out = gptcore.attention_varlen(*_varlen(cu_q=(0, 0, 5), cu_k=(0, 0, 4), max_q=5, max_k=4))
    assert out.shape == (5, 2, 4) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- route

@pytest.mark.parametrize("top_k", [0, 5])
def test_route_top_k_out_of_range(top_k):
    with pytest.raises(ValueError, match=rf"top_k: expected an int in \[1, 4\], got {top_k}"):
        gptcore.route(torch.randn(3, 4), top_k)


def test_route_top_k_not_int():
    with pytest.raises(TypeError, match=r"top_k: expected an int, got float"):
        gptcore.route(torch.randn(3, 4), 2.0)


def test_route_bad_scoring():
    with pytest.raises(ValueError, match=r"scoring: expected one of .* got 'relu'"):
        gptcore.route(torch.randn(3, 4), 2, scoring="relu")


@pytest.mark.parametrize("scoring", ["softmax", "topk_softmax"])
def test_route_bias_needs_sigmoid(scoring):
    with pytest.raises(ValueError, match=rf"bias: only scoring='sigmoid' .* "
                                         rf"got scoring='{scoring}'"):
        gptcore.route(torch.randn(3, 4), 2, scoring=scoring, bias=torch.zeros(4))


def test_route_bad_bias_shape():
    with pytest.raises(ValueError, match=r"bias: expected shape \(4,\), got \(3,\)"):
        gptcore.route(torch.randn(3, 4), 2, scoring="sigmoid", bias=torch.zeros(3))


def test_route_non_tensor_logits():
    with pytest.raises(TypeError, match=r"logits: expected a torch.Tensor, got list"):
        gptcore.route([[1.0, 2.0]], 1)


# ----------------------------------------------------------------------------- experts

@pytest.mark.parametrize("bad", [3, -2])
def test_moe_experts_index_out_of_range(bad):
    x, indices, weights, gate_up, down = _experts(E=3)
    indices[1, 0] = bad
    with pytest.raises(ValueError, match=rf"indices: expected expert ids in \[0, 3\) or -1, "
                                         rf"got {bad}"):
        gptcore.moe_experts(x, indices, weights, gate_up, down)


def test_moe_experts_minus_one_accepted():
    x, indices, weights, gate_up, down = _experts()
    indices[:, 1] = -1
    y = gptcore.moe_experts(x, indices, weights, gate_up, down)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_moe_experts_bad_activation():
    with pytest.raises(ValueError, match=r"activation: expected one of .* got 'relu'"):
        gptcore.moe_experts(*_experts(), activation="relu")


def test_moe_experts_mismatched_down_proj():
    x, indices, weights, gate_up, down = _experts(H=4, I=2, E=3)
    with pytest.raises(ValueError, match=r"down_proj: expected shape \(3, 4, 2\) .* "
                                         r"got \(3, 4, 3\)"):
        gptcore.moe_experts(x, indices, weights, gate_up, torch.randn(3, 4, 3))


def test_moe_experts_mismatched_gate_up_proj():
    x, indices, weights, gate_up, down = _experts(H=4)
    with pytest.raises(ValueError, match=r"gate_up_proj: expected shape \(E, 2I, 4\), got"):
        gptcore.moe_experts(x, indices, weights, gate_up[:, :, :3], down)


def test_moe_experts_bad_bias_shape():
    with pytest.raises(ValueError, match=r"down_bias: expected shape \(3, 4\), got \(3, 5\)"):
        gptcore.moe_experts(*_experts(), down_bias=torch.zeros(3, 5))


def test_moe_experts_indices_weights_shapes_differ():
    x, indices, weights, gate_up, down = _experts()
    with pytest.raises(ValueError, match=r"indices, weights: expected shape \(3, k\)"):
        gptcore.moe_experts(x, indices, weights[:, :1], gate_up, down)


@pytest.mark.parametrize("position", [0, 3])
def test_moe_experts_non_tensor_input(position):
    args = list(_experts())
    name = ["x", "indices", "weights", "gate_up_proj"][position]
    args[position] = args[position].tolist()
    with pytest.raises(TypeError, match=rf"{name}: expected .*got list"):
        gptcore.moe_experts(*args)


# ----------------------------------------------------------------------------- MXFP4

def test_mxfp4_k_not_multiple_of_32():
    with pytest.raises(ValueError, match=r"w: expected a last dim that is a multiple of 32, got "
                                         r"shape \(2, 48\)"):
        gptcore.mxfp4_quantize(torch.randn(2, 48))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_mxfp4_non_finite_input(value):
    w = torch.randn(2, 32)
    w[1, 5] = value
    with pytest.raises(ValueError, match=r"w: expected finite values"):
        gptcore.mxfp4_quantize(w)


def test_mxfp4_non_tensor_input():
    with pytest.raises(TypeError, match=r"w: expected a torch.Tensor, got list"):
        gptcore.mxfp4_quantize([0.0] * 32)
    with pytest.raises(TypeError, match=r"w4: expected a gptcore.MXFP4Tensor, got Tensor"):
        gptcore.mxfp4_dequantize(torch.zeros(2, 16, dtype=torch.uint8))
