"""The Triton experts read K-major expert weights in place, under the interpreter: transformers
stores gpt-oss's experts as gate_up_proj (E, H, 2I) and down_proj (E, I, H) and hands gptcore
their transposed views. Outputs and gradients match the reference; every GEMM launch is given
the weights' own storage (a per-call `.contiguous()` would hand it a copy)."""
import pytest
import torch

import gptcore
from checks import close_scaled, exact_fp32, gpt_oss_limit, tolerance
from test_moe_triton import MOE_TOL

pytest.importorskip("triton", reason="triton is not installed")
from gptcore.backends.triton.kernels import moe_gemm  # noqa: E402


def _experts(E, H, I, dtype):
    """K-major storage, as transformers holds gpt-oss's experts, and gptcore's views of it."""
    gate_up = torch.randn(E, H, 2 * I).div(H ** 0.5).to(dtype)      # (E, H, 2I) storage
    down = torch.randn(E, I, H).div(I ** 0.5).to(dtype)             # (E, I, H) storage
    return gate_up, down


class LaunchSpy:
    """Stands in for a @triton.jit kernel: records the tensor arguments of each launch."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append([a for a in args if isinstance(a, torch.Tensor)])
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("activation", ["silu", "gpt_oss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_kmajor_weights_match_the_reference(activation, dtype):
    torch.manual_seed(0)
    T, E, H, I, k = 21, 4, 40, 24, 2
    gate_up, down = _experts(E, H, I, dtype)
    gu_t, dn_t = gate_up.transpose(1, 2), down.transpose(1, 2)       # (E, 2I, H), (E, H, I)
    x = torch.randn(T, H).to(dtype)
    indices = torch.stack([torch.randperm(E)[:k] for _ in range(T)])
    weights = torch.rand(T, k).to(dtype)
    dy = torch.randn(T, H).to(dtype)
    limit = gpt_oss_limit(dtype, 1.0)

    def run(backend, tensors):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        with gptcore.backend(backend):
            y = gptcore.moe_experts(*leaves[:1], indices, *leaves[1:], activation=activation,
                                    limit=limit)
            y.backward(dy.to(y.dtype))
        return [y.detach()] + [t.grad for t in leaves]

    # the views themselves, not clones: .clone() keeps their K-major strides
    assert not gu_t.is_contiguous() and not dn_t.is_contiguous()
    got = run("triton", [x, weights, gu_t, dn_t])
    with exact_fp32():
        want = run("ref", [t.float() for t in (x, weights, gu_t, dn_t)])
    for name, g, w in zip(("y", "dx", "dweights", "dgate_up", "ddown"), got, want):
        close_scaled(name, g, w, tolerance(dtype, MOE_TOL))


def test_triton_reads_kmajor_weights_in_place(monkeypatch):
    """Forward and backward: every launch of a GEMM that reads expert weights gets the
    weights' storage itself, never a copy of it."""
    torch.manual_seed(0)
    T, E, H, I, k = 9, 3, 32, 16, 2
    gate_up, down = _experts(E, H, I, torch.float32)
    gu_t = gate_up.transpose(1, 2).requires_grad_()                  # leaf views of the storage
    dn_t = down.transpose(1, 2).requires_grad_()
    x = torch.randn(T, H, requires_grad=True)
    indices = torch.stack([torch.randperm(E)[:k] for _ in range(T)])
    weights = torch.rand(T, k, requires_grad=True)
    spies = {name: LaunchSpy(getattr(moe_gemm, name))
             for name in ("_gate_up_kernel", "_grouped_gemm_kernel")}
    for name, spy in spies.items():
        monkeypatch.setattr(moe_gemm, name, spy)
    with gptcore.backend("triton"):
        y = gptcore.moe_experts(x, indices, weights, gu_t, dn_t)
        y.sum().backward()
    storages = {gate_up.data_ptr(): "gate_up", down.data_ptr(): "down"}
    # the weight operand is the second pointer argument of both kernels (w_ptr, b_ptr)
    read = [storages.get(args[1].data_ptr(), "a copy") for spy in spies.values()
            for args in spy.launches]
    # forward: GEMM 1, GEMM 2; backward: GEMM 1 again, d(gate, up), d weights, dx
    assert len(read) == 6, read
    assert read.count("gate_up") == 3 and read.count("down") == 3, read
