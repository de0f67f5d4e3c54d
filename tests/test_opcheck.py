"""torch.library.opcheck over every op spec x every backend that serves it: schema, fake tensors,
autograd registration and AOT dispatch. Adding an op = adding its rows to SAMPLES; a spec
without rows, or a backend losing an op, fails here."""
import pytest
import torch

import gptcore
import gptcore.backends.ref  # noqa: F401  (defines the ref_ ops the samples are made with)
from gptcore.ops.spec import SPECS, has_op

BACKENDS = {"cpp": "", "triton": "triton_", "ref": "ref_"}
# ops a backend does not serve (calls fall back to the reference, with a warning)
NOT_SERVED = {("triton", "mxfp4_quantize"), ("triton", "mxfp4_dequantize")}
NOT_SERVED |= {("triton", "quantized_linear")}


def samples():
    """op name -> list of argument tuples, valid calls that differ in the paths they take."""
    g = torch.Generator().manual_seed(0)

    def r(*shape, grad=False):
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    ops = torch.ops.gptcore
    q, k, v, sinks = r(1, 4, 3, 8, grad=True), r(1, 2, 5, 8, grad=True), r(1, 2, 5, 8, grad=True), \
        r(4, grad=True)
    flags = (0.35, 2, 0, 3.0)     # scale, window (2, 0) = causal window 3, softcap
    plain = (0.25, -1, -1, 0.0)   # no mask, no softcap
    out, lse = ops.ref_attention_fwd(q, k, v, sinks, *flags)
    qv, kv, vv = (t[0].transpose(0, 1).contiguous().detach().requires_grad_() for t in (q, k, v))
    cu_q, cu_k = torch.tensor([0, 1, 3], dtype=torch.int32), torch.tensor([0, 3, 5],
                                                                          dtype=torch.int32)
    var = (qv, kv, vv, cu_q, cu_k, 2, 3)
    out_v, lse_v = ops.ref_attention_varlen_fwd(*var, sinks, *flags)
    logits = r(5, 6, grad=True)
    weights, indices = ops.ref_route(logits, 2, "softmax", True, None)
    x, gate_up, down = r(3, 4, grad=True), r(3, 6, 4, grad=True), r(3, 4, 3, grad=True)
    idx, w = torch.tensor([[0, 2], [1, -1], [2, 0]]), r(3, 2, grad=True)
    gub, db = r(3, 6, grad=True), r(3, 4, grad=True)
    blocks, scales = ops.ref_mxfp4_quantize(r(3, 64, 64))  # I = 32
    down_blocks, down_scales = ops.ref_mxfp4_quantize(r(3, 64, 32))
    x64 = r(3, 64)
    xn, rn = r(4, 8), r(4, 8)
    _, hn, rstd_n = ops.ref_rms_norm_fwd(xn, rn, None, 1e-5)
    xa, gu = r(3, 5, 6, grad=True), r(4, 10, grad=True)
    xl, wl, tl = r(5, 4, grad=True), r(7, 4, grad=True), torch.tensor([0, 6, -100, 3, 2])
    quantized = [gptcore.quantize_weight(r(5, 40), fmt)
                 for fmt in ("bf16", "int8", "int4", "mxfp4")]
    return {
        "attention_fwd": [(q, k, v, sinks, *flags), (q, k, v, None, *plain)],
        "attention_bwd": [(r(*out.shape), r(*lse.shape), q, k, v, out, lse, sinks, *flags)],
        "attention_varlen_fwd": [(*var, sinks, *flags), (*var, None, *plain)],
        "attention_varlen_bwd": [(r(*out_v.shape), r(*lse_v.shape), *var, out_v, lse_v, sinks,
                                  *flags)],
        "route": [(logits, 2, "sigmoid", True, r(6)), (logits, 2, "softmax", True, None),
                  (logits, 3, "topk_softmax", True, None)],
        "route_bwd": [(r(5, 2), logits, indices, "softmax", True, None)],
        "moe_experts_fwd": [(x, idx, w, gate_up, down, gub, db, "silu", 1.702, 7.0),
                            (x, idx, w, gate_up, down, None, None, "gpt_oss", 1.702, 7.0)],
        "moe_experts_bwd": [(r(3, 4), x, idx, w, gate_up, down, None, db, "gpt_oss", 1.702, 7.0)],
        "moe_experts_mxfp4": [(x64, idx, w.detach(), blocks, scales, down_blocks, down_scales,
                               None, None, "gelu", 1.702, 7.0)],
        "mxfp4_quantize": [(r(2, 3, 64),)],
        "mxfp4_dequantize": [(blocks, scales, torch.float32), (blocks, scales, torch.bfloat16)],
        "rms_norm_fwd": [(r(3, 5, 8, grad=True), r(3, 5, 8, grad=True), r(8, grad=True), 1e-5),
                         (r(4, 7, grad=True), None, None, 1e-6)],
        "rms_norm_bwd": [(r(4, 8), r(4, 8), xn, rn, hn, r(8), rstd_n, 1e-5),
                         (r(4, 8), r(0), xn, None, r(0), None, rstd_n, 1e-5)],
        "rotary_fwd": [(r(2, 3, 4, 8, grad=True), r(2, 3, 2, 8, grad=True), r(1, 3, 8), r(1, 3, 8),
                        False),
                       (r(2, 4, 3, 6, grad=True).transpose(1, 2), r(2, 3, 1, 6, grad=True),
                        r(2, 3, 6), r(2, 3, 6), True)],
        "rotary_bwd": [(r(2, 3, 4, 8), r(2, 3, 2, 8), r(2, 3, 8), r(2, 3, 8), False),
                       (r(1, 5, 2, 6), r(1, 5, 1, 6), r(1, 5, 6), r(1, 5, 6), True)],
        "gelu_fwd": [(xa, "none"), (xa, "tanh")],
        "gelu_bwd": [(r(3, 5, 6), xa, "none"), (r(3, 5, 6), xa, "tanh")],
        "gated_activation_fwd": [(gu, "swiglu"), (gu, "geglu")],
        "gated_activation_bwd": [(r(4, 5), gu, "swiglu"), (r(4, 5), gu, "geglu")],
        "linear_cross_entropy_fwd": [(xl, wl, tl, -100, 0.0, True), (xl, wl, tl, -100, 1e-3, True),
                                     (xl.detach(), wl.detach(), tl.clamp(min=0), 2, 0.0, False)],
        "linear_cross_entropy_bwd": [(r(()), xl, wl, tl, -100, 0.0, r(5, 4), r(7, 4))],
        "quantized_linear": [(r(rows, 40), w.data, w.scales, w.format, w.group_size, r(5))
                             for rows in (1, 9) for w in quantized],   # GEMV and tiled paths
    }


def cases():
    return [(backend, name) for backend in BACKENDS for name in sorted(SPECS)
            if (backend, name) not in NOT_SERVED]


def test_every_spec_has_sample_rows():
    assert set(samples()) == set(SPECS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_serve_every_op_they_should(backend):
    assert gptcore.available_backends()[backend], f"backend {backend} is not available"
    served = {name for name in SPECS if has_op(BACKENDS[backend] + name, "CPU")}
    assert served == {name for name in SPECS if (backend, name) not in NOT_SERVED}


@pytest.mark.parametrize("backend,name", cases())
def test_opcheck(backend, name):
    gptcore.available_backends()   # loads every backend's ops
    for args in samples()[name]:
        if name.endswith("_bwd"):  # backward ops run inside backward, on tensors needing no grad
            args = tuple(a.detach() if torch.is_tensor(a) else a for a in args)
        torch.library.opcheck(getattr(torch.ops.gptcore, BACKENDS[backend] + name), args)
