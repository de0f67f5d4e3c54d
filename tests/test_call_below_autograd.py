"""gptcore.ops.spec.call: an op call with nothing to differentiate goes below autograd (no
Python autograd layer), and gives the same result; a call that may need autograd keeps the full
dispatch (gradients, torch.func); forward-mode AD raises instead of dropping the tangent."""
import pytest
import torch
from torch.autograd import forward_ad

import gptcore
from gptcore.ops import spec


def _calls():
    """name -> (fn(*tensors), tensors): one entry point of each op family that has an autograd
    formula."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "rms_norm": (lambda x, w: gptcore.rms_norm(x, w), (rand(2, 3, 16), rand(16))),
        "rotary": (lambda q, k: gptcore.rotary(q, k, torch.arange(5))[0], (rand(1, 5, 4, 8), rand(1, 5, 2, 8))),
        "attention": (lambda q, k, v: gptcore.attention(q, k, v, causal=True),
                      (rand(1, 4, 5, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 8))),
        "gelu": (lambda x: gptcore.gelu(x), (rand(3, 7),)),
    }


CALLS = _calls()


class _Counter:
    """Stands in for call's below-autograd guard and counts how often it is entered."""
    entered = 0

    def __init__(self):
        self.guard = _REAL()

    def __enter__(self):
        type(self).entered += 1
        return self.guard.__enter__()

    def __exit__(self, *exc):
        return self.guard.__exit__(*exc)


_REAL = spec._below_autograd


@pytest.fixture
def counted(monkeypatch):
    _Counter.entered = 0
    monkeypatch.setattr(spec, "_below_autograd", _Counter)
    return _Counter


@pytest.mark.parametrize("name", CALLS)
def test_no_grad_goes_below_autograd_with_the_same_result(name, counted):
    fn, tensors = CALLS[name]
    with torch.no_grad():
        fast = fn(*tensors)
    assert counted.entered == 1
    leaves = [t.clone().requires_grad_() for t in tensors]
    full = fn(*leaves)
    assert counted.entered == 1                     # an input requires grad: full dispatch
    assert full.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, full.detach(), rtol=0, atol=0)   # same kernel either way


@pytest.mark.parametrize("name", CALLS)
def test_inputs_without_grad_outside_no_grad_go_below_autograd(name, counted):
    fn, tensors = CALLS[name]
    out = fn(*tensors)
    assert counted.entered == 1 and not out.requires_grad
    with torch.inference_mode():
        torch.testing.assert_close(fn(*tensors), out, rtol=0, atol=0)


@pytest.mark.parametrize("name", CALLS)
def test_gradients_still_flow(name, counted):
    fn, tensors = CALLS[name]
    leaves = [t.clone().requires_grad_() for t in tensors]
    fn(*leaves).square().sum().backward()
    with gptcore.backend("ref"):
        refs = [t.clone().requires_grad_() for t in tensors]
        fn(*refs).square().sum().backward()
    for got, want in zip(leaves, refs):
        # fp32 kernels against the reference's op order: a few ulps of the gradient's scale
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-5)
    assert counted.entered == 0


def test_vmap_keeps_the_full_dispatch(counted):
    x, w = CALLS["rms_norm"][1]
    batched = torch.func.vmap(lambda row: gptcore.rms_norm(row, w))(x)
    assert counted.entered == 0
    torch.testing.assert_close(batched, gptcore.rms_norm(x, w), rtol=0, atol=0)


@pytest.mark.parametrize("name", CALLS)
def test_forward_mode_ad_raises_naming_the_op(name):
    fn, tensors = CALLS[name]
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(tensors[0], torch.ones_like(tensors[0]))
        with pytest.raises(NotImplementedError, match=r"gptcore::\w+: forward-mode AD"):
            fn(dual, *tensors[1:])
        fn(*tensors)                                   # no dual input: runs inside the level


def test_jvp_raises_rather_than_returning_a_zero_tangent():
    x, w = CALLS["rms_norm"][1]
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        torch.func.jvp(lambda t: gptcore.rms_norm(t, w), (x,), (torch.ones_like(x),))
