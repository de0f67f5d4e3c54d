"""Zero-size inputs for every op, run by tests/test_zero_size.py in a child process per backend
(`python tests/zero_size_cases.py ref|cpp|triton`), so that a crash (SIGFPE, SIGSEGV) fails
the test instead of killing the test session. Each case prints `start <name>` before it runs
and `ok <name>` or `fail <name>: <error>` after; the parent reads the last `start` of a dead
child to name the case that killed it.

Semantics checked (docs/api.md, "Empty inputs"): empty outputs of the right shape, zeros (and
lse = -inf, or the sink) for rows that see nothing, gradients of the inputs' shapes that are zero
where the input reached no output, and ValueError naming the argument for zero sizes that have no
meaning (D, Hkv, E, top_k, the MoE hidden size H and intermediate size I)."""
import os
import sys
import traceback

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

import gptcore  # noqa: E402

CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def leaf(*shape):
    return torch.randn(*shape, dtype=torch.float32).requires_grad_()


def zero(name, t):
    assert t is not None, f"{name}: no gradient"
    assert bool((t == 0).all()), f"{name}: expected zeros, got max |x| {t.abs().max().item()}"


def shape(name, t, want):
    assert tuple(t.shape) == tuple(want), f"{name}: expected shape {tuple(want)}, got {tuple(t.shape)}"


def raises(arg, fn):
    try:
        fn()
    except ValueError as err:
        assert str(err).startswith(arg), f"ValueError should name {arg!r}: {err}"
        return
    raise AssertionError(f"expected a ValueError naming {arg!r}, got none")


# ----------------------------------------------------------------------------- attention

def dense(B, Hq, Hkv, Sq, Sk, D=8, sinks=False, **options):
    """Forward and backward of one attention call; returns (out, lse, q, k, v, sinks)."""
    q, k, v = leaf(B, Hq, Sq, D), leaf(B, Hkv, Sk, D), leaf(B, Hkv, Sk, D)
    s = leaf(Hq) if sinks else None
    out, lse = gptcore.attention(q, k, v, sinks=s, return_lse=True, **options)
    shape("out", out, (B, Hq, Sq, D))
    shape("lse", lse, (B, Hq, Sq))
    (out.sum() + lse.masked_fill(torch.isinf(lse), 0).sum()).backward()
    for name, t in (("q", q), ("k", k), ("v", v), ("sinks", s)):
        if t is not None:
            shape(f"d{name}", t.grad, t.shape)
    return out, lse, q, k, v, s


@case
def attention_empty_batch():
    for sinks in (False, True):
        _, _, q, k, v, s = dense(0, 2, 1, 5, 5, sinks=sinks)
        if sinks:
            zero("dsinks", s.grad)


@case
def attention_no_query_heads():
    dense(1, 0, 1, 4, 4)


@case
def attention_no_queries():
    for causal in (False, True):
        _, _, q, k, v, s = dense(2, 2, 1, 0, 6, sinks=True, causal=causal)
        for name, t in (("dk", k.grad), ("dv", v.grad), ("dsinks", s.grad)):
            zero(name, t)


@case
def attention_no_keys():
    for causal in (False, True):
        out, lse, q, k, v, _ = dense(1, 4, 2, 3, 0, causal=causal)
        zero("out", out)
        assert bool(torch.isneginf(lse).all()), "lse of rows that see nothing must be -inf"
        zero("dq", q.grad)


@case
def attention_no_keys_with_sinks():
    # lse = the sink for every row, so d(sum lse)/d sink_h = B * Sq.
    out, lse, q, _, _, s = dense(2, 2, 1, 3, 0, sinks=True)
    zero("out", out)
    torch.testing.assert_close(lse, s.detach()[None, :, None].expand(2, 2, 3))
    torch.testing.assert_close(s.grad, torch.full((2,), 6.0))
    zero("dq", q.grad)


@case
def attention_no_queries_no_keys():
    dense(1, 2, 1, 0, 0)


@case
def attention_meaningless_zeros():
    raises("q", lambda: dense(1, 2, 1, 3, 3, D=0))
    raises("k", lambda: dense(1, 2, 0, 3, 3))
    raises("k", lambda: dense(1, 0, 0, 3, 3))


def varlen(lens_q, lens_k, Hq=2, Hkv=1, D=8, **options):
    def offsets(lens):
        return torch.tensor([0] + torch.tensor(lens, dtype=torch.long).cumsum(0).tolist(),
                            dtype=torch.int32)
    cu_q, cu_k = offsets(lens_q), offsets(lens_k)
    q, k, v = leaf(int(cu_q[-1]), Hq, D), leaf(int(cu_k[-1]), Hkv, D), leaf(int(cu_k[-1]), Hkv, D)
    out, lse = gptcore.attention_varlen(q, k, v, cu_q, cu_k, max(lens_q, default=0),
                                        max(lens_k, default=0), return_lse=True, **options)
    shape("out", out, q.shape)
    shape("lse", lse, q.shape[:2])
    out.sum().backward()
    for name, t in (("q", q), ("k", k), ("v", v)):
        shape(f"d{name}", t.grad, t.shape)
    return out, lse, q, k, v, cu_q


@case
def varlen_no_sequences():
    varlen([], [])


@case
def varlen_all_sequences_empty():
    _, _, q, k, v, _ = varlen([0, 0, 0], [0, 2, 0])
    zero("dk", k.grad)
    zero("dv", v.grad)


@case
def varlen_some_sequences_empty():
    for causal in (False, True):
        out, lse, q, k, v, cu_q = varlen([0, 3, 2, 0], [4, 0, 3, 0], causal=causal)
        rows = slice(int(cu_q[1]), int(cu_q[2]))       # sequence 1 has queries but no keys
        zero("out of a sequence without keys", out[rows])
        assert bool(torch.isneginf(lse[rows]).all()), "lse of rows that see nothing must be -inf"
        zero("dq of a sequence without keys", q.grad[rows])
        zero("dk of a sequence without queries", k.grad[:4])


@case
def varlen_meaningless_zeros():
    raises("k", lambda: varlen([2], [2], Hkv=0))
    raises("q", lambda: varlen([2], [2], D=0))


# ----------------------------------------------------------------------------- MoE

@case
def route_no_tokens():
    for scoring in ("softmax", "topk_softmax", "sigmoid"):
        logits = leaf(0, 4)
        weights, indices = gptcore.route(logits, 2, scoring=scoring)
        shape("weights", weights, (0, 2))
        shape("indices", indices, (0, 2))
        weights.sum().backward()
        shape("dlogits", logits.grad, (0, 4))


@case
def route_meaningless_zeros():
    raises("logits", lambda: gptcore.route(torch.randn(3, 0), 1))
    raises("top_k", lambda: gptcore.route(torch.randn(3, 4), 0))


def experts(T, H, I, E, indices, biases=False):
    x, weights = leaf(T, H), torch.rand(T, indices.shape[1]).requires_grad_()
    gate_up, down = leaf(E, 2 * I, H), leaf(E, H, I)
    gub, db = (leaf(E, 2 * I), leaf(E, H)) if biases else (None, None)
    y = gptcore.moe_experts(x, indices, weights, gate_up, down, gate_up_bias=gub, down_bias=db)
    shape("y", y, (T, H))
    y.sum().backward()
    grads = {"x": x, "weights": weights, "gate_up_proj": gate_up, "down_proj": down,
             "gate_up_bias": gub, "down_bias": db}
    for name, t in grads.items():
        if t is not None:
            shape(f"d{name}", t.grad, t.shape)
    return y, {name: t.grad for name, t in grads.items() if t is not None}


@case
def experts_no_tokens():
    _, grads = experts(0, 8, 4, 3, torch.zeros(0, 2, dtype=torch.long), biases=True)
    for name, g in grads.items():
        zero(f"d{name}", g)


@case
def experts_without_tokens_and_no_expert_slots():
    # Expert 1 gets no token; token 2 chose no expert at all (-1, -1).
    indices = torch.tensor([[0, 2], [2, 0], [-1, -1]])
    y, grads = experts(3, 8, 4, 3, indices, biases=True)
    zero("y of a token with no expert", y[2])
    zero("dx of a token with no expert", grads["x"][2])
    zero("dweights of the -1 slots", grads["weights"][2])
    for name in ("gate_up_proj", "down_proj", "gate_up_bias", "down_bias"):
        zero(f"d{name} of an expert without tokens", grads[name][1])


@case
def experts_meaningless_zeros():
    idx = torch.zeros(3, 1, dtype=torch.long)
    raises("gate_up_proj", lambda: experts(3, 8, 4, 0, torch.full((3, 1), -1)))
    raises("gate_up_proj", lambda: experts(3, 8, 0, 2, idx))
    raises("x", lambda: experts(3, 0, 4, 2, idx))
    raises("indices", lambda: experts(3, 8, 4, 2, torch.zeros(3, 0, dtype=torch.long)))


@case
def moe_no_tokens():
    x, router = leaf(0, 8), leaf(3, 8)
    y, aux = gptcore.moe(x, router, torch.randn(3, 8, 8), torch.randn(3, 8, 4), 2)
    shape("y", y, (0, 8))
    for name in ("load_balancing_loss", "z_loss"):
        assert aux[name].item() == 0.0, f"{name} without tokens: expected 0, got {aux[name]}"
    zero("tokens_per_expert", aux["tokens_per_expert"])
    (y.sum() + aux["load_balancing_loss"] + aux["z_loss"]).backward()
    zero("drouter_weight", router.grad)
    raises("router_weight", lambda: gptcore.moe(leaf(2, 8), leaf(0, 8), torch.randn(0, 8, 8),
                                                torch.randn(0, 8, 4), 1))


@case
def mxfp4_empty():
    with gptcore.backend("ref" if BACKEND == "triton" else BACKEND):   # no Triton quantiser
        w4 = gptcore.mxfp4_quantize(torch.randn(0, 64))
        shape("dequantized", gptcore.mxfp4_dequantize(w4), (0, 64))
        gate_up = gptcore.mxfp4_quantize(torch.randn(2, 64, 32))
        down = gptcore.mxfp4_quantize(torch.randn(2, 32, 32))
    with torch.no_grad():
        y = gptcore.moe_experts(torch.randn(0, 32), torch.zeros(0, 2, dtype=torch.long),
                                torch.rand(0, 2), gate_up, down)
    shape("y", y, (0, 32))


BACKEND = sys.argv[1] if __name__ == "__main__" else "ref"

if __name__ == "__main__":
    names = sys.argv[2:] or list(CASES)
    with gptcore.backend(BACKEND):
        for name in names:
            print(f"start {name}", flush=True)
            try:
                CASES[name]()
            except Exception:   # report every failing case, not just the first
                last = traceback.format_exc().strip().splitlines()[-1]
                print(f"fail {name}: {last}", flush=True)
            else:
                print(f"ok {name}", flush=True)
