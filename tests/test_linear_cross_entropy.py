"""gptcore.linear_cross_entropy (the LM head with its loss, chunked over tokens): the C++ op and
the Triton backend's (chunked torch, run on CPU tensors here) against gptcore.ref, loss and both gradients, over odd shapes (one token, zero tokens, every
token ignored, vocabularies that split into several chunks), with and without z-loss; the
reference against F.cross_entropy and a per-token loop; bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

import gptcore
from checks import close_scaled
from gptcore import ref

IGNORE = -100
# (tokens, d, vocab): one token, zero tokens, a vocabulary one 16 MB chunk cannot hold at once
# (V = 70000: 59 rows per chunk, so 150 tokens take 3 chunks, the last one short)
SHAPES = [(1, 4, 3), (0, 8, 5), (37, 16, 11), (150, 12, 70000)]
# fp32: the C++ op sums the tokens' losses chunk by chunk and its GEMMs in another order than
# the reference: a few ulp of values ~ log(V) and of gradients ~ 1 / tokens: 2e-6 scaled.
# bf16: dx, dweight are rounded to bf16 once (2^-8), from fp32 sums identical up to 2e-6.
TOL = {torch.float32: 2e-6, torch.bfloat16: 8e-3}


def _inputs(N, d, V, dtype, ignore_every=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g).to(dtype)
    w = (torch.randn(V, d, generator=g) / math.sqrt(d)).to(dtype)
    target = torch.randint(0, V, (N,), generator=g)
    if ignore_every:
        target[::ignore_every] = IGNORE
    return x, w, target


def _run(x, w, target, z_loss):
    """The loss and d(3 * loss)/dx, dweight (a gradient other than 1 reaches backward)."""
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss = gptcore.linear_cross_entropy(xl, wl, target, IGNORE, z_loss)
    (3 * loss).backward()
    return loss, xl.grad, wl.grad


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
@pytest.mark.parametrize("ignore_every", [0, 3, 1], ids=["all-kept", "some-ignored", "all-ignored"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_matches_ref(backend, dtype, shape, ignore_every, z_loss):
    x, w, target = _inputs(*shape, dtype, ignore_every)
    with gptcore.backend(backend):
        got = _run(x, w, target, z_loss)
    with gptcore.backend("ref"):
        want = _run(x, w, target, z_loss)
    for name, a, b in zip(("loss", "dx", "dweight"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape)
        close_scaled(name, a, b, TOL[dtype])
    if ignore_every == 1 or shape[0] == 0:        # no kept token: 0, and no gradient at all
        assert got[0].item() == 0 and not got[1].any() and not got[2].any()


def test_no_grad_call_matches():
    x, w, target = _inputs(37, 16, 11, torch.float32, 4)
    with torch.no_grad():
        loss = gptcore.linear_cross_entropy(x, w, target, IGNORE, 1e-3)
    assert loss.item() == pytest.approx(ref.linear_cross_entropy(x, w, target, IGNORE, 1e-3).item(),
                                        rel=1e-6)    # the same sums in another order


def test_leading_dims_are_tokens():
    x, w, target = _inputs(24, 8, 7, torch.float32)
    flat = gptcore.linear_cross_entropy(x, w, target, IGNORE)
    shaped = gptcore.linear_cross_entropy(x.view(2, 3, 4, 8), w, target.view(2, 3, 4), IGNORE)
    assert torch.equal(flat, shaped)


def test_ref_matches_torch_and_a_per_token_loop():
    x, w, target = _inputs(9, 6, 5, torch.float64, 4)
    logits = x @ w.t()
    assert torch.allclose(ref.linear_cross_entropy(x, w, target, IGNORE),
                          F.cross_entropy(logits, target, ignore_index=IGNORE), atol=1e-12)
    total, kept = 0.0, 0
    for i in range(9):
        if int(target[i]) == IGNORE:
            continue
        lse = math.log(sum(math.exp(float(v)) for v in logits[i]))
        total += lse - float(logits[i, target[i]]) + 0.1 * lse * lse
        kept += 1
    assert abs(float(ref.linear_cross_entropy(x, w, target, IGNORE, 0.1)) - total / kept) < 1e-12


def test_ref_gradcheck():
    x, w, target = _inputs(5, 4, 3, torch.float64, 2)
    assert torch.autograd.gradcheck(
        lambda x, w: ref.linear_cross_entropy(x, w, target, IGNORE, 0.01),
        (x.requires_grad_(), w.requires_grad_()))


@pytest.mark.parametrize("call,error,match", [
    (lambda x, w, t: gptcore.linear_cross_entropy(x.int(), w, t), TypeError, r"x: expected dtype"),
    (lambda x, w, t: gptcore.linear_cross_entropy(x, w.double(), t), TypeError, r"weight: expected"),
    (lambda x, w, t: gptcore.linear_cross_entropy(x, w[:, :3], t), ValueError,
     r"weight: expected shape \(V, 8\)"),
    (lambda x, w, t: gptcore.linear_cross_entropy(x, w, t[:2]), ValueError, r"target: expected shape"),
    (lambda x, w, t: gptcore.linear_cross_entropy(x, w, t.int()), TypeError, r"target: expected dtype"),
    (lambda x, w, t: gptcore.linear_cross_entropy(x, w, t + 5), ValueError,
     r"target: expected ids in \[0, 5\)"),
    (lambda x, w, t: gptcore.linear_cross_entropy(x, w, t, z_loss=-1.0), ValueError,
     r"z_loss: expected a number >= 0"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(4, 8), torch.randn(5, 8), torch.tensor([0, 1, 4, IGNORE]))
