"""gptcore.parallel.expert_parallel in 2 and 4 gloo processes against the unconverted layer on
the whole global batch: outputs, input gradients, expert gradients on the owning rank, router and
shared-expert gradients after an all-reduce; empty batches and experts nobody routes to."""
import copy

import pytest
import torch
import torch.distributed as dist

from process_group import spawn
from gptcore import parallel
from gptcore.nn import MoE

# (tokens per rank at world size 2, at 4), MoE keyword arguments, experts nobody may choose
SCENARIOS = [
    # uneven batches, one rank with none at all
    (([11, 0], [6, 0, 9, 1]), dict(scoring="softmax", activation="silu"), []),
    # experts 2 and 3 (all of rank 1's at world size 4) get no tokens from anyone
    (([5, 8], [3, 4, 2, 5]), dict(scoring="sigmoid", activation="silu"), [2, 3]),
    # expert biases (gpt-oss) and a replicated shared expert
    (([7, 4], [1, 5, 3, 2]), dict(scoring="topk_softmax", activation="gpt_oss",
                                  n_shared_experts=1), []),
]
D_MODEL, D_FF, N_EXPERTS, TOP_K = 12, 10, 8, 2


def _all_reduced(grad):
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad


def _check_layer(rank, world, tokens_per_rank, kwargs, shunned):
    torch.manual_seed(0)
    layer = MoE(D_MODEL, D_FF, N_EXPERTS, TOP_K, **kwargs)
    if layer.gate_up_bias is not None:
        torch.nn.init.normal_(layer.gate_up_bias)
        torch.nn.init.normal_(layer.down_bias)
    if shunned:
        layer.expert_bias[shunned] = -100.0      # selection only: sigmoid scores are in (0, 1)
    x_all = torch.randn(sum(tokens_per_rank), D_MODEL)
    grad_all = torch.randn(sum(tokens_per_rank), D_MODEL)
    start = sum(tokens_per_rank[:rank])
    mine = slice(start, start + tokens_per_rank[rank])

    whole = copy.deepcopy(layer)
    x_ref = x_all.clone().requires_grad_()
    y_ref = whole(x_ref)
    (y_ref * grad_all).sum().backward()

    parallel.expert_parallel(layer)
    # installed from outside: the same class, a dispatch strategy (no class reassignment)
    assert type(layer) is MoE and isinstance(layer.dispatch, parallel.ExpertParallel)
    E_local = N_EXPERTS // world
    assert layer.gate_up_proj.shape == (E_local, 2 * D_FF, D_MODEL)
    x = x_all[mine].clone().requires_grad_()
    y = layer(x)
    (y * grad_all[mine]).sum().backward()

    # fp32 sums in another order (C++ sgemm over other row sets, combine outside the kernel):
    # a few ulps of O(1) values
    tol = dict(atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(y, y_ref[mine].detach(), **tol)
    torch.testing.assert_close(x.grad, x_ref.grad[mine], **tol)
    keep = slice(rank * E_local, (rank + 1) * E_local)
    whole_params = dict(whole.named_parameters())
    experts = parallel.expert_parameters(layer)
    assert set(experts) == {n for n in parallel.SHARDED if getattr(whole, n) is not None}
    for name, p in layer.named_parameters():
        if name in experts:
            want = whole_params[name].grad[keep]
            got = p.grad
        else:   # replicated: each rank holds its tokens' share
            want, got = whole_params[name].grad, _all_reduced(p.grad)
        torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{name}: {m}")
    counts = _all_reduced(layer.aux["tokens_per_expert"])
    assert torch.equal(counts, whole.aux["tokens_per_expert"])
    if shunned:
        assert counts[shunned].sum() == 0
    assert layer.total_params == whole.total_params
    assert layer.active_params == whole.active_params


def _layers(rank, world):
    for tokens, kwargs, shunned in SCENARIOS:
        _check_layer(rank, world, tokens[0 if world == 2 else 1], kwargs, shunned)
    with pytest.raises(ValueError, match=f"n_experts={world + 1} must be divisible"):
        parallel.expert_parallel(MoE(D_MODEL, D_FF, world + 1, TOP_K))
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        parallel.expert_parallel("model")
    with pytest.raises(TypeError, match="group: expected a torch.distributed.ProcessGroup"):
        parallel.expert_parallel(MoE(D_MODEL, D_FF, 8, TOP_K), group=1)
    with pytest.raises(ValueError, match="module: expected at least one gptcore.nn.MoE"):
        parallel.expert_parallel(torch.nn.Linear(2, 2))
    converted = parallel.expert_parallel(torch.nn.Sequential(MoE(D_MODEL, D_FF, 8, TOP_K)))
    with pytest.raises(ValueError, match="already converted"):
        parallel.expert_parallel(converted)


@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_matches_unconverted_layer(world):
    spawn(world, _layers)


def test_expert_parallel_bad_input():
    with pytest.raises(RuntimeError, match="not initialized"):
        parallel.expert_parallel(MoE(D_MODEL, D_FF, N_EXPERTS, TOP_K))
