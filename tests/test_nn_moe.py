"""gptcore.nn.MoE against the same layer written with gptcore.ref, forward and gradients."""
import pytest
import torch

from gptcore import ref
from gptcore.nn import MoE


def ref_forward(m, x):
    """The layer from ref.moe plus a dense shared expert (Qwen2-MoE), in plain PyTorch."""
    x2 = x.reshape(-1, m.d_model)
    y, aux = ref.moe(x2, m.router.weight, m.gate_up_proj, m.down_proj, m.top_k,
                     scoring=m.scoring, renormalize=m.renormalize, bias=m.expert_bias,
                     activation=m.activation, gate_up_bias=m.gate_up_bias, down_bias=m.down_bias)
    if m.n_shared_experts:
        h = x2 @ m.shared_gate_up_proj[0].T
        a = ref.glu_activation(h, m.activation)
        y = y + torch.sigmoid(m.shared_gate(x2)) * (a @ m.shared_down_proj[0].T)
    return y.reshape(x.shape), aux


@pytest.mark.parametrize("scoring,activation,shared", [
    ("softmax", "silu", 0), ("softmax", "gelu", 2), ("topk_softmax", "gpt_oss", 0),
    ("sigmoid", "silu", 1)])
def test_moe_module_matches_ref(scoring, activation, shared):
    torch.manual_seed(0)
    m = MoE(32, 24, 5, 2, scoring=scoring, activation=activation, n_shared_experts=shared)
    if m.gate_up_bias is not None:
        torch.nn.init.normal_(m.gate_up_bias)
    x = torch.randn(3, 7, 32, requires_grad=True)
    y = m(x)
    want, aux = ref_forward(m, x)
    assert y.shape == x.shape
    # fp32 sums in another order (C++ sgemm tiles): a few ulps of O(1) values
    torch.testing.assert_close(y, want, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(m.aux["load_balancing_loss"], aux["load_balancing_loss"])
    params = [p for p in m.parameters()] + [x]
    g = torch.autograd.grad(y.square().sum(), params)
    g_ref = torch.autograd.grad(want.square().sum(), params)
    for got, exp in zip(g, g_ref):
        torch.testing.assert_close(got, exp, atol=1e-4, rtol=1e-4)  # same, through backward GEMMs


def test_moe_param_counts():
    m = MoE(16, 8, 4, 1, n_shared_experts=1)
    expert = 3 * 16 * 8
    router, shared = 4 * 16, expert + 16
    assert m.total_params == router + 4 * expert + shared
    assert m.active_params == router + expert + shared
    g = MoE(16, 8, 4, 2, activation="gpt_oss")
    assert g.active_params == 4 * 16 + 2 * (expert + 2 * 8 + 16)


def test_moe_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        MoE(16, 8, 4, 5)
