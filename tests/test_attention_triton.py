"""Triton attention kernels on CPU under the Triton interpreter vs gptcore.ref: outputs, lse and
every gradient (q, k, v, sinks, and through lse) over odd shapes, masks, GQA, varlen, decode.

tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported.
The interpreter computes bf16 tl.dot wrongly (triton issue 11584): fp32 and fp16 only.
"""
import os

import pytest
import torch

import gptcore
from checks import close_scaled, exact_fp32, tolerance
from gptcore import ref

triton = pytest.importorskip("triton", reason="triton is not installed")

# Max error relative to max(1, max |reference|), by how the products are formed (tests/checks.py
# picks one from the precision in force). ieee (fp32 products): the kernel sums in another order
# than the reference; measured max 2.3e-6 over this file (dq), so 2e-5 leaves 9x headroom and
# still catches a mask or scale error, which shows as O(0.1). fp16: inputs, P and dS rounded to
# fp16 (2^-11 relative) before their matmuls; measured max 6.6e-4 (dsinks), so 3e-3. tf32: q, k,
# v, P and dS each lose their 13 low mantissa bits (truncated, 2^-10 relative) inside the
# products while the reference keeps them; measured max 3.7e-3 (dk, D128, TF32 emulated on the
# interpreter over this file and tests/test_triton_configs.py), so 1.5e-2.
TOL = {"ieee": 2e-5, "tf32": 1.5e-2, "fp16": 3e-3}


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    """tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported (or, under
    `make gpu-check`, puts every tensor on the GPU)."""
    on_gpu = os.environ.get("GPTCORE_TEST_DEVICE") == "cuda"
    assert on_gpu or os.environ.get("TRITON_INTERPRET") == "1", "run under tests/conftest.py"
    assert gptcore.available_backends()["triton"], "the triton backend failed to load"


def _close(name, got, want, dtype):
    close_scaled(name, got, want, tolerance(dtype, TOL))


def _lse_close(got, want, dtype):
    assert torch.equal(torch.isinf(got), torch.isinf(want)), "lse: -inf rows differ"
    finite = ~torch.isinf(want)
    _close("lse", got[finite], want[finite], dtype)


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def _run(fn, inputs, dout, dlse, backend):
    """Calls fn(*inputs) -> (out, lse) under a backend, backpropagates (dout, dlse) through both."""
    leaves = _leaves(*inputs)
    with gptcore.backend(backend):
        out, lse = fn(*leaves)
    torch.autograd.backward((out, lse), (dout, dlse))
    grads = [None if t is None else t.grad for t in leaves]
    return out.detach(), lse.detach(), grads


def _compare(fn, inputs, dtype):
    """Triton vs the reference on the same (already rounded) inputs, reference in fp32."""
    with torch.no_grad(), gptcore.backend("ref"), exact_fp32():
        out_ref, lse_ref = fn(*[None if t is None else t.float() for t in inputs])
    dout = torch.randn_like(out_ref)
    dlse = torch.randn_like(lse_ref).masked_fill(torch.isinf(lse_ref), 0.0)
    with exact_fp32():
        want = _run(fn, [None if t is None else t.float() for t in inputs], dout, dlse, "ref")
    got = _run(fn, inputs, dout.to(dtype), dlse, "triton")
    _close("out", got[0], want[0], dtype)
    _lse_close(got[1], want[1], dtype)
    for name, g, w in zip(("dq", "dk", "dv", "dsinks"), got[2], want[2]):
        if w is not None:
            _close(name, g, w, dtype)


# (B, Hq, Hkv, Sq, Sk, D, options): every D of the issue, Sq != Sk, S = 1, lengths that are no
# multiple of any block, GQA 1/4/8, windows 1 / 128 / (left, right), sinks, softcap, rows that
# see no key (Sq > Sk causal), decode shapes (Sq small, Sk long: the split-KV path).
CASES = [
    (1, 2, 1, 5, 7, 1, {}),
    (2, 4, 1, 37, 37, 16, dict(causal=True)),
    (1, 4, 2, 20, 45, 80, dict(window=(5, 3), sinks=True, softcap=2.0)),
    (1, 2, 2, 33, 33, 128, dict(causal=True, window=1)),
    (1, 1, 1, 17, 23, 256, {}),
    (1, 2, 1, 1, 1, 16, dict(causal=True, sinks=True)),
    (1, 8, 1, 19, 19, 16, dict(causal=True, sinks=True)),
    (1, 1, 1, 150, 150, 16, dict(causal=True, window=128)),
    (1, 2, 1, 40, 21, 16, dict(causal=True, sinks=True)),
    (1, 2, 2, 24, 24, 16, dict(window=(-1, 0), softcap=5.0)),
    (1, 2, 2, 24, 30, 16, dict(window=(10, -1))),
    (1, 2, 1, 21, 21, 16, dict(window=1, scale=0.3)),
    (1, 4, 1, 100, 100, 80, {}),
    (1, 2, 1, 9, 40, 256, dict(causal=True, softcap=1.5)),
    (1, 8, 1, 1, 300, 64, dict(causal=True, sinks=True)),
    (2, 4, 1, 3, 200, 16, dict(causal=True, window=50)),
]


def _ids(case):
    B, Hq, Hkv, Sq, Sk, D, opts = case
    return f"B{B}-H{Hq}/{Hkv}-S{Sq}x{Sk}-D{D}-" + "-".join(f"{k}={v}" for k, v in opts.items())


def _dense(case, dtype):
    B, Hq, Hkv, Sq, Sk, D, opts = case
    opts = dict(opts)
    q = torch.randn(B, Hq, Sq, D).to(dtype)
    k = torch.randn(B, Hkv, Sk, D).to(dtype)
    v = torch.randn(B, Hkv, Sk, D).to(dtype)
    sinks = torch.randn(Hq).to(dtype) if opts.pop("sinks", False) else None

    def fn(q, k, v, sinks):
        return gptcore.attention(q, k, v, sinks=sinks, return_lse=True, **opts)
    return fn, [q, k, v, sinks]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_attention(case, dtype):
    torch.manual_seed(0)
    fn, inputs = _dense(case, dtype)
    _compare(fn, inputs, dtype)


def test_decode_cases_take_the_split_kv_path():
    from gptcore.backends.triton.kernels import attention_decode
    for B, Hq, Hkv, Sq, Sk, _, _ in CASES[-2:]:
        assert attention_decode.n_splits(B, Hq, Hq // Hkv, Sq, Sk) > 1
    lens_q, lens_k = zip(*VARLEN_DECODE)
    assert attention_decode.n_splits(len(lens_q), 4, 2, max(lens_q), max(lens_k)) > 1


# Packed sequences (q length, k length): a zero-length sequence, one query row, Sq < Sk; and
# decode-like lengths, long enough in keys for the split-KV path.
VARLEN = [(5, 9), (0, 0), (16, 21), (1, 17), (7, 7)]
VARLEN_DECODE = [(1, 150), (0, 0), (2, 250)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("lengths, opts", [
    (VARLEN, dict(causal=True, sinks=True)),
    (VARLEN, dict(window=(4, 2), softcap=3.0)),
    (VARLEN_DECODE, dict(causal=True, sinks=True, window=100)),
], ids=["causal-sinks", "window-softcap", "decode"])
def test_attention_varlen(lengths, opts, dtype):
    torch.manual_seed(2)
    opts = dict(opts)
    Hq, Hkv, D = 4, 2, 24
    lens_q, lens_k = zip(*lengths)
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(int(cu_q[-1]), Hq, D).to(dtype)
    k = torch.randn(int(cu_k[-1]), Hkv, D).to(dtype)
    v = torch.randn(int(cu_k[-1]), Hkv, D).to(dtype)
    sinks = torch.randn(Hq).to(dtype) if opts.pop("sinks", False) else None

    def fn(q, k, v, sinks):
        return gptcore.attention_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k),
                                        sinks=sinks, return_lse=True, **opts)
    _compare(fn, [q, k, v, sinks], dtype)


def test_varlen_queries_without_keys_give_zeros():
    """A sequence with queries but no keys (gptcore.ref cannot run it): zeros, lse -inf, and
    zero gradients; the other sequence is unaffected."""
    torch.manual_seed(3)
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 0, 6], dtype=torch.int32)
    q, k, v = _leaves(torch.randn(9, 2, 16), torch.randn(6, 1, 16), torch.randn(6, 1, 16))
    with gptcore.backend("triton"):
        out, lse = gptcore.attention_varlen(q, k, v, cu_q, cu_k, 5, 6, causal=True,
                                            return_lse=True)
    out.sum().backward()
    assert torch.equal(out[:4], torch.zeros_like(out[:4]))
    assert torch.isinf(lse[:4]).all() and (lse[:4] < 0).all()
    assert torch.equal(q.grad[:4], torch.zeros_like(q.grad[:4]))
    with exact_fp32():
        want = ref.attention(q[4:].detach().transpose(0, 1)[None],
                             k.detach().transpose(0, 1)[None], v.detach().transpose(0, 1)[None],
                             causal=True)
    _close("out", out[4:].detach(), want[0].transpose(0, 1), torch.float32)


def test_ops_are_registered_for_cpu_and_cuda():
    from gptcore.ops.spec import has_op
    for name in ("attention_fwd", "attention_bwd", "attention_varlen_fwd", "attention_varlen_bwd"):
        for key in ("CPU", "CUDA"):
            assert has_op("triton_" + name, key), (name, key)


def test_non_contiguous_inputs():
    """q, k, v as transposed views of (B, S, H, D) tensors, the layout most models hold."""
    torch.manual_seed(4)
    q = torch.randn(2, 13, 4, 16).transpose(1, 2)
    k = torch.randn(2, 17, 2, 16).transpose(1, 2)
    v = torch.randn(2, 17, 2, 16).transpose(1, 2)

    def fn(q, k, v, sinks):
        return gptcore.attention(q, k, v, causal=True, return_lse=True)
    _compare(fn, [q, k, v, None], torch.float32)


@pytest.mark.parametrize("head_dim", [1, 64, 80, 128, 256])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("softcap", [False, True])
def test_autotune_pruning_keeps_the_tiles_proven_for_the_head_dim(head_dim, dtype, softcap):
    """The GPU autotuner (not run by the interpreter, which gets one config) only ever tries
    the tiles the AOT check proved for the padded head dim and the launch's specialisation
    (fp32 operands, softcap), and always has at least one."""
    from gptcore.backends.triton.kernels import attention_bwd, attention_fwd
    from gptcore.backends.triton.kernels.attention_common import block_d, head_dim_bucket, pruner
    bd = block_d(head_dim)
    unproven_for_launch = ({"fp32"} if dtype == torch.float32 else set()) | (
        {"softcap"} if softcap else set())
    for table, prune in ((attention_fwd.GPU_CONFIGS, attention_fwd.prune),
                         (attention_bwd.DKDV_CONFIGS, pruner(attention_bwd.DKDV_CONFIGS)),
                         (attention_bwd.DQ_CONFIGS, pruner(attention_bwd.DQ_CONFIGS))):
        cfgs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
                for m, n, w, s, _, _ in table]
        args = {"max_seq_q": 4096, "Q": torch.empty(0, dtype=dtype), "HAS_SOFTCAP": softcap}
        kept = prune(cfgs, args, BLOCK_D=bd)
        proven = {c[:4] for c in table
                  if head_dim_bucket(bd) in c[4] and not unproven_for_launch & set(c[5])}
        got = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
               for c in kept}
        assert proven and got == proven, (table, got, proven)


def test_row_offsets_that_would_overflow_int32_are_refused():
    from gptcore.backends.triton.kernels import attention as launchers
    q = torch.empty(4, 1, 16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        launchers.forward(q, q, q, None, 0.25, -1, -1, 0.0, cu, cu, 2**27, 4)
