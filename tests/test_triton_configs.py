"""Every GPU tile configuration of the Triton kernels, computed (not only compiled) under the
Triton interpreter against gptcore.ref: outputs and gradients, fp32 and fp16, on shapes that
reach each config's edge paths (partial blocks in both axes, the causal diagonal, a window,
sinks, GQA).

The kernels normally give the interpreter one small tile (multi-config autotune fails under
it); here each test swaps in exactly one production config. `make test` runs every config in
fp32 at the head dim of its smallest bucket; `make test-gpu-configs` (GPTCORE_ALL_CONFIGS=1)
runs every config at every head-dim bucket it serves, in fp32 and fp16.
"""
import contextlib
import os

import pytest
import torch

import gptcore
from checks import close_scaled, exact_fp32, gpt_oss_limit, tolerance

triton = pytest.importorskip("triton", reason="triton is not installed")
from gptcore.backends.triton.kernels import attention_bwd, attention_decode, attention_fwd, moe  # noqa: E402

ALL = os.environ.get("GPTCORE_ALL_CONFIGS") == "1"
DTYPES = (torch.float32, torch.float16) if ALL else (torch.float32,)
# A head dim inside each padded bucket, none a power of two: the D tail is masked too.
HEAD_DIM = {64: 40, 128: 80, 256: 160}
# By how products are formed (tests/checks.py), for the reasons of tests/test_attention_triton.py:
# ieee reorders sums (measured <= 3e-6); fp16 rounds inputs, P and dS to fp16 before their
# matmuls (measured <= 7e-4); tf32 truncates every operand to 10 mantissa bits (measured
# <= 3.1e-3 here).
ATTN_TOL = {"ieee": 2e-5, "tf32": 1.5e-2, "fp16": 3e-3}
# tests/test_moe_triton.py: ieee reorders K sums; fp16 rounds the activation between GEMMs;
# tf32 truncates every operand to 10 mantissa bits (measured <= 1.8e-3 here).
MOE_TOL = {"ieee": 1e-5, "tf32": 3e-2, "fp16": 1e-2}


def _table_cases(table):
    """(config, head dim) pairs: every bucket under ALL, else the smallest one."""
    cases = []
    for m, n, w, s, dims, _ in table:
        for bucket in (dims if ALL else dims[:1]):
            cases.append(pytest.param((m, n, w, s), HEAD_DIM[bucket],
                                      id=f"m{m}-n{n}-w{w}-s{s}-D{HEAD_DIM[bucket]}"))
    return cases


@contextlib.contextmanager
def only_config(tuned, m, n, warps, stages):
    """Makes an autotuned kernel run exactly one tile config (the interpreter runs one)."""
    saved = tuned.configs
    tuned.configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps,
                                   num_stages=stages)]
    tuned.cache.clear()
    try:
        yield
    finally:
        tuned.configs = saved
        tuned.cache.clear()


@pytest.fixture
def one_split(monkeypatch):
    """Sizes the split-KV decode for the GPU's 132 SMs, so the small shapes here would all
    take it: one split keeps them on the tuned forward kernel under test."""
    monkeypatch.setattr(attention_decode, "n_splits", lambda *sizes: 1)


def fast_forward():
    """The forward in its widest GPU tile while a backward config is under test: the
    interpreter's 16x16 forward costs more than the backward being tested."""
    return only_config(attention_fwd.attention_fwd_tuned, *attention_fwd.GPU_CONFIGS[0][:4])


def _attention_case(m, n, D, dtype):
    """Lengths that end inside a block of either size, Sk > Sq (bottom-right diagonal crosses
    blocks), GQA 4/2, sinks and a window wide enough to leave fully visible blocks."""
    torch.manual_seed(m + n + D)
    Sq, Sk = m + n // 2 + 3, m + n + 5
    q = torch.randn(1, 4, Sq, D).to(dtype)
    k = torch.randn(1, 2, Sk, D).to(dtype)
    v = torch.randn(1, 2, Sk, D).to(dtype)
    sinks = torch.randn(4).to(dtype)
    return q, k, v, sinks


def _attention_grads(q, k, v, sinks, backend, backward, **opts):
    leaves = [t.detach().clone().requires_grad_(backward) for t in (q, k, v, sinks)]
    with gptcore.backend(backend):
        out, lse = gptcore.attention(*leaves[:3], sinks=leaves[3], return_lse=True, **opts)
    if not backward:
        return [out, lse]
    torch.manual_seed(7)
    dout = torch.randn(out.shape).to(out.dtype)
    torch.autograd.backward((out, lse), (dout, torch.randn_like(lse)))
    return [out.detach(), lse.detach()] + [t.grad for t in leaves]


def _check_attention(q, k, v, sinks, dtype, backward=True, **opts):
    got = _attention_grads(q, k, v, sinks, "triton", backward, **opts)
    with exact_fp32():
        want = _attention_grads(q.float(), k.float(), v.float(), sinks.float(), "ref", backward,
                                **opts)
    for name, g, w in zip(("out", "lse", "dq", "dk", "dv", "dsinks"), got, want):
        close_scaled(name, g, w, tolerance(dtype, ATTN_TOL))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg, D", _table_cases(attention_fwd.GPU_CONFIGS))
@pytest.mark.parametrize("opts", [dict(causal=True), dict(window=(37, 5), softcap=4.0)][:2 if ALL
                                                                                        else 1],
                         ids=["causal", "window-softcap"][:2 if ALL else 1])
def test_attention_forward_config(cfg, D, opts, dtype, one_split):
    """Forward only: the backward configs have tests of their own."""
    q, k, v, sinks = _attention_case(cfg[0], cfg[1], D, dtype)
    with only_config(attention_fwd.attention_fwd_tuned, *cfg):
        _check_attention(q, k, v, sinks, dtype, backward=False, **opts)
        assert attention_fwd.attention_fwd_tuned.best_config.kwargs["BLOCK_M"] == cfg[0]


def _backward_cases():
    """(which kernel, config, head dim): the dK/dV and the dQ kernels' tables."""
    return [pytest.param(kernel, *case.values, id=f"{kernel}-{case.id}")
            for kernel, table in (("dkdv", attention_bwd.DKDV_CONFIGS),
                                  ("dq", attention_bwd.DQ_CONFIGS))
            for case in _table_cases(table)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel, cfg, D", _backward_cases())
def test_attention_backward_config(kernel, cfg, D, dtype, one_split):
    tuned = getattr(attention_bwd, f"attention_bwd_{kernel}_tuned")
    q, k, v, sinks = _attention_case(cfg[0], cfg[1], D, dtype)
    with only_config(tuned, *cfg), fast_forward():
        _check_attention(q, k, v, sinks, dtype, causal=True, window=50)
        assert (tuned.best_config.kwargs["BLOCK_M"], tuned.best_config.kwargs["BLOCK_N"]) == cfg[:2]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [40, 80, 160] if ALL else [80])
@pytest.mark.parametrize("tiles", [attention_decode.GPU_DECODE,
                                   attention_decode.GPU_DECODE_FP32_D256], ids=str)
def test_attention_decode_config(D, tiles, dtype, monkeypatch):
    """The GPU decode tiles with the split-KV path taken: 2 query rows of a 4/1 GQA group
    (packed rows), keys ending inside a key block, a sliding window."""
    monkeypatch.setattr(attention_decode, "decode_tiles", lambda *args: tiles)
    torch.manual_seed(D)
    Sk = 1000
    q = torch.randn(1, 4, 2, D).to(dtype)
    k, v = torch.randn(1, 1, Sk, D).to(dtype), torch.randn(1, 1, Sk, D).to(dtype)
    sinks = torch.randn(4).to(dtype)
    assert attention_decode.n_splits(1, 4, 4, 2, Sk) > 1
    _check_attention(q, k, v, sinks, dtype, causal=True, window=700)


def _moe_cases():
    """(name, forward config, backward config) for every MoE tile config."""
    cases = [pytest.param(f, moe.BACKWARD_CONFIGS["decode"], id="fwd-" + "-".join(map(str, key)))
             for key, f in moe.CONFIGS.items()]
    cases += [pytest.param(moe.CONFIGS[(b, None, None, None)], c, id="bwd-" + b)
              for b, c in moe.BACKWARD_CONFIGS.items()]
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fwd_cfg, bwd_cfg", _moe_cases())
def test_moe_config(fwd_cfg, bwd_cfg, dtype, monkeypatch):
    """Forward and backward of the experts with production tiles (and the weight-gradient
    tile): H and I end inside a tile, one expert gets more rows than BLOCK_M, one gets none."""
    def config(T, top_k, H, I, E, backward=False, **specialisation):
        return bwd_cfg if backward else fwd_cfg
    monkeypatch.setattr(moe, "config", config)
    monkeypatch.setattr(moe, "_wgrad_config", lambda: moe.WGRAD_CONFIG)
    torch.manual_seed(0)
    T, H, I, E, top_k = fwd_cfg["BLOCK_M"] + 9, 72, 40, 4, 2
    indices = torch.stack([torch.tensor([t % 3, 0]) if t % 2 else torch.tensor([0, 1])
                           for t in range(T)])          # expert 3 gets no token
    tensors = [torch.randn(T, H), torch.rand(T, top_k), torch.randn(E, 2 * I, H) / H ** 0.5,
               torch.randn(E, H, I) / I ** 0.5, torch.randn(E, 2 * I), torch.randn(E, H)]
    tensors = [t.to(dtype) for t in tensors]
    limit = gpt_oss_limit(dtype, 1.0)

    def run(backend, ts):
        leaves = [t.detach().clone().requires_grad_() for t in ts]
        x, w, gu, dn, gub, db = leaves
        with gptcore.backend(backend):
            y = gptcore.moe_experts(x, indices, w, gu, dn, activation="gpt_oss",
                                    gate_up_bias=gub, down_bias=db, limit=limit)
        torch.manual_seed(1)
        y.backward(torch.randn(y.shape).to(y.dtype))
        return [y.detach()] + [t.grad for t in leaves]

    got = run("triton", tensors)
    with exact_fp32():
        want = run("ref", [t.float() for t in tensors])
    for name, g, w in zip(("y", "dx", "dweights", "dgate_up", "ddown", "dgu_bias", "ddown_bias"),
                          got, want):
        close_scaled(name, g, w, tolerance(dtype, MOE_TOL))


def test_reference_is_independent_of_the_config_swap():
    """The swap restores the interpreter's own config afterwards (other tests rely on it)."""
    before = [c.kwargs for c in attention_fwd.attention_fwd_tuned.configs]
    with only_config(attention_fwd.attention_fwd_tuned, 128, 64, 8, 3):
        assert attention_fwd.attention_fwd_tuned.configs[0].kwargs["BLOCK_M"] == 128
    assert [c.kwargs for c in attention_fwd.attention_fwd_tuned.configs] == before
