"""The SIMD paths of the C++ attention at every ISA level against gptcore.ref, outputs and
gradients: the column-layout forward (pieces of >= 16 query rows on AVX-512, >= 8 on AVX2) and
the row kernels of smaller pieces, over tails of every width below the 16-lane vector (and so
below the 8-lane one), D=1 and D=80, Sq != Sk,
no keys at all, and scores large enough that most exponentials underflow; and the register
tiles of the backward's products (csrc/attention_bwd_*.cpp) over their row and vector tails."""
import pytest
import torch

import gptcore
from test_attention_cpp import FP32_TOL, _compare, _dense

_C = pytest.importorskip("gptcore._C", reason="the C++ extension is not built")


@pytest.mark.parametrize("w", range(16))
def test_tails(w, isa):
    """w = every tail width below 16 lanes. Column layout: M = 16 + w query rows (padded to a
    multiple of 16 on AVX-512; of 8 on AVX2, where w and w - 8 are the tails and 16..31 columns
    make tiles of 2, 3 and 3 + 1 vectors), D = 1 + w (the 4-row register tiles' tails), causal
    on odd w. Row kernels: M = 1 + w rows (from 8 rows the AVX2 column layout), D = 16 + w (the
    masked K tail of the dot products), 130 + w keys (the tile tail of 2 + w in exp_row)."""
    causal = dict(causal=True) if w % 2 else dict()
    _dense(1, 1, 1, 16 + w, 37 + w, 1 + w, causal, torch.float32, FP32_TOL)
    _dense(1, 1, 1, 1 + w, 130 + w, 16 + w, causal, torch.float32, FP32_TOL)


# Head dims of 1 to 5 zmm vectors (two 64-column passes at 80 and 131) and odd ones.
BWD_DIMS = (48, 80, 131, 16, 64, 5)


@pytest.mark.parametrize("w", range(6))
def test_backward_tiles(w, isa):
    """The backward's 6-row tiles over every row tail w: GQA of 3 heads makes 3 * (13 + w)
    score rows (and 64 // 3 rows per head in a tile), 70 + 5w keys a second key block with a
    tail of 6 + 5w rows in dV and dK; causal and windowed on odd w."""
    opts = dict(causal=True, window=9) if w % 2 else dict()
    _dense(2, 3, 1, 13 + w, 70 + 5 * w, BWD_DIMS[w], opts, torch.float32, FP32_TOL)


# (B, Hq, Hkv, Sq, Sk, D, options): GQA groups that make pieces of >= 16 rows, masks, sinks,
# softcap (in base 2 in the column layout), and Sq > Sk (rows that see no key).
CASES = [
    (1, 8, 2, 37, 53, 80, dict(causal=True, window=20, sinks=True, softcap=3.0)),
    (2, 4, 1, 20, 300, 80, dict(window=(40, 7))),
    (1, 2, 2, 150, 40, 33, dict(causal=True, sinks=True)),
    (1, 4, 2, 100, 260, 24, dict(window=(30, 5))),                  # 64 columns per head: 24-column
                                                                    # AVX2 tiles span two heads
    (1, 4, 4, 24, 0, 8, dict()),                                    # no keys: zeros, lse -inf
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:6]}{c[6]}")
def test_cases(case, isa):
    _dense(*case, torch.float32, FP32_TOL)


def test_underflowing_scores(isa):
    """Scores of magnitude ~100: most probabilities underflow to 0 and the row maximum decides
    every result, in each tile of the online softmax."""
    torch.manual_seed(0)
    B, H, Sq, Sk, D = 1, 2, 40, 300, 64
    q = (torch.randn(B, H, Sq, D) * 12).requires_grad_()
    k, v = (torch.randn(B, H, Sk, D, requires_grad=True) for _ in range(2))

    def fn(q, k, v):
        return gptcore.attention(q, k, v, causal=True, return_lse=True)
    # dk = dS^T q and the scores grow with |q|, 12x: the fp32 tolerance scaled by 12.
    tol = dict(atol=FP32_TOL["atol"] * 12, rtol=FP32_TOL["rtol"])
    _compare(fn, (q, k, v), (B, H, Sq, D), (B, H, Sq), tol)


def test_build_info_names_the_path(isa):
    path = _C.build_info()["paths"]
    attention = path.get("attention fp32", path.get("attention"))
    expected = {"portable": "portable", "avx2": "AVX2 column-layout",
                "avx512": "AVX-512 column-layout", "avx512_bf16": "AVX-512 column-layout"}[isa]
    assert expected in attention, attention


def test_backward_deterministic(isa):
    """One long sequence of one head: its keys are split into chunks run on several threads,
    each adding dQ into its own slice. Two runs at the same thread count agree bit for bit."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 300, 40, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, 2, 300, 40)

    def grads():
        out = gptcore.attention(q, k, v, causal=True)
        return torch.autograd.grad(out, (q, k, v), grad)
    for first, second in zip(grads(), grads()):
        assert torch.equal(first, second)
