"""The C++ attention reads q, k, v and dout through their strides: the layouts models produce
((B, S, H, D) views of a fused projection, transposed to (B, H, S, D); packed (T, H, D) halves of
a fused k/v projection) give the same outputs and gradients as the reference, at every ISA
level, with no copy of q, k, v or dout; and a gptcore.GPT training step makes few copies."""
import pytest
import torch

import gptcore
from checks import close_scaled
from gptcore import GPT, GPTConfig

# fp32: sums in another order than the reference's (a few ulp of O(1) values over up to 70 keys);
# bf16: inputs are the same bf16 values, the kernel rounds P to bf16 once (2^-8 relative).
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


def _fused_views(B, S, Hq, Hkv, D, dtype, seed=0):
    """q (B, Hq, S, D), k, v (B, Hkv, S, D): transposed views of one (B, S, (Hq + 2 Hkv) D)
    projection, the layout gptcore.nn.Attention and nanoGPT hand to attention."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(B, S, (Hq + 2 * Hkv) * D, generator=g).to(dtype).requires_grad_()
    q, kv = proj.split([Hq * D, 2 * Hkv * D], dim=-1)
    q = q.view(B, S, Hq, D).transpose(1, 2)
    k, v = kv.view(B, S, 2, Hkv, D).unbind(2)
    return proj, q, k.transpose(1, 2), v.transpose(1, 2)


def _attend(backend, B, S, Hq, Hkv, D, dtype, causal):
    proj, q, k, v = _fused_views(B, S, Hq, Hkv, D, dtype)
    assert S < 2 or not (q.is_contiguous() or k.is_contiguous())   # the layout under test
    with gptcore.backend(backend):
        out = gptcore.attention(q, k, v, causal=causal)
    # the model's o_proj input: a (B, S, H D) view, so dout reaches attention transposed
    flat = out.transpose(1, 2).reshape(B, S, Hq * D)
    g = torch.Generator().manual_seed(1)
    (flat.float() * torch.randn(flat.shape, generator=g)).sum().backward()
    return out, proj.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(2, 5, 4, 2, 8), (1, 70, 2, 2, 32), (3, 1, 2, 1, 1),
                                   (2, 17, 3, 3, 80), (1, 0, 2, 1, 8)], ids=str)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_strided_views_match_ref(isa, dtype, shape, causal):
    got = _attend("cpp", *shape, dtype, causal)
    want = _attend("ref", *shape, dtype, causal)
    for name, a, b in zip(("out", "dproj"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        close_scaled(name, a, b, TOL[dtype])


def test_packed_kv_halves_match_ref(isa):
    T, Hq, Hkv, D = 9, 4, 2, 16
    g = torch.Generator().manual_seed(0)
    q = torch.randn(T, Hq, D, generator=g)
    kv = torch.randn(T, 2 * Hkv * D, generator=g)
    k, v = kv.view(T, 2, Hkv, D).unbind(1)                      # (T, Hkv, D), row stride 2 Hkv D
    cu = torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    outs = {}
    for backend in ("cpp", "ref"):
        leaves = [t.clone().requires_grad_() for t in (q, kv)]
        kk, vv = leaves[1].view(T, 2, Hkv, D).unbind(1)
        with gptcore.backend(backend):
            out = gptcore.attention_varlen(leaves[0], kk, vv, cu, cu, 5, 5, causal=True)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        outs[backend] = (out, leaves[0].grad, leaves[1].grad)
    assert not k.is_contiguous()
    for name, a, b in zip(("out", "dq", "dkv"), outs["cpp"], outs["ref"]):
        close_scaled(name, a, b, TOL[torch.float32])


def _copies(fn):
    """aten::copy_ calls on tensors with more than one element while fn runs (scalar copies are
    the loss's .item() and the optimizer's step counters)."""
    with torch.profiler.profile(record_shapes=True) as prof:
        fn()
    return sum(e.count for e in prof.key_averages(group_by_input_shape=True)
               if e.key == "aten::copy_" and e.input_shapes and e.input_shapes[0]
               and torch.Size(e.input_shapes[0]).numel() > 1)


def test_attention_copies_none_of_its_inputs():
    _, q, k, v = _fused_views(2, 16, 4, 4, 8, torch.float32)
    dout = torch.randn(2, 16, 4, 8).transpose(1, 2)              # strided, like a model's
    with gptcore.backend("cpp"):
        out = gptcore.attention(q, k, v, causal=True)
        assert _copies(lambda: gptcore.attention(q, k, v, causal=True)) == 0
        assert _copies(lambda: torch.autograd.grad(out, q, dout, retain_graph=True)) == 0


def test_gpt_training_step_copies_few_tensors():
    """Per layer, what remains: the attention output's (B, H, S, D) -> (B, S, H D) and its
    gradient's way back (the C++ kernels write contiguous outputs)."""
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, d_model=128, n_head=4, mlp="gelu",
                    pos="learned", tie_embeddings=True)
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    idx = torch.randint(0, 65, (12, 64))

    def step():
        with gptcore.backend("cpp"):
            _, loss = model(idx, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()
    assert _copies(step) <= 2 * cfg.n_layer
