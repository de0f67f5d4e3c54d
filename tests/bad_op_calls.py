"""Direct torch.ops.gptcore.<prefix><op> calls with bad arguments, run by tests/test_op_checks.py
in a child process per backend (`python tests/bad_op_calls.py "" | triton_ | ref_`): each call
must raise a Python exception; a crash or an out-of-bounds access would kill the child, which the
parent reports with the last call started. These calls skip gptcore's Python validation, so
what stops them is the op's own checks (csrc/common/checks.h, and the specs' checks that wrap the Python backends)."""
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

import gptcore  # noqa: E402
import gptcore.backends.ref  # noqa: E402,F401  (defines the ref_ ops)

gptcore.available_backends()   # loads the C++ and Triton ops
ops = torch.ops.gptcore
f32, i32, i64 = torch.float32, torch.int32, torch.int64


def r(*shape, dtype=f32):
    return torch.randn(*shape).to(dtype)


def cu(*offsets):
    return torch.tensor(offsets, dtype=i32)


FLAGS = (0.35, -1, -1, 0.0)                            # scale, window, softcap
q4, k4 = r(1, 2, 3, 8), r(1, 1, 5, 8)
q3, k3 = r(4, 2, 8), r(6, 1, 8)
out4, lse4 = r(1, 2, 3, 8), r(1, 2, 3)
out3, lse3 = r(4, 2, 8), r(4, 2)
x, idx, w = r(3, 8), torch.tensor([[0, 1], [1, 2], [2, 0]]), torch.rand(3, 2)
gu, dn = r(3, 8, 8), r(3, 8, 4)                          # E = 3, I = 4, H = 8
x32, gub4, gus4 = r(3, 32), torch.zeros(3, 64, 16, dtype=torch.uint8), torch.zeros(3, 64, 1, dtype=torch.uint8)
dnb4, dns4 = torch.zeros(3, 32, 16, dtype=torch.uint8), torch.zeros(3, 32, 1, dtype=torch.uint8)
EXP = ("silu", 1.702, 7.0)
idx2 = torch.tensor([4, -100])                         # a token id and an ignored token

# (op, arguments): every one of these is wrong in one way.
CALLS = {
    "attention_fwd": [
        (r(2, 3, 8), k4, k4, None), (q4, k4, r(1, 1, 4, 8), None),
        (q4.int(), k4.int(), k4.int(), None), (q4, k4.double(), k4, None),
        (q4, r(1, 1, 5, 4), r(1, 1, 5, 4), None), (q4, r(1, 0, 5, 8), r(1, 0, 5, 8), None),
        (r(1, 3, 3, 8), r(1, 2, 5, 8), r(1, 2, 5, 8), None), (q4, k4, k4, r(3)),
        (q4, r(2, 1, 5, 8), r(2, 1, 5, 8), None), (r(1, 2, 3, 300), r(1, 1, 5, 300), r(1, 1, 5, 300), None),
        (r(1, 2, 3, 0), r(1, 1, 5, 0), r(1, 1, 5, 0), None),
    ],
    "attention_bwd": [
        (r(1, 2, 3, 4), lse4, q4, k4, k4, out4, lse4, None), (out4, r(1, 2), q4, k4, k4, out4, lse4, None),
        (out4, lse4, q4, k4, k4, out4, r(1, 2, 4), None), (out4, lse4, q4, k4, k4, out4.double(), lse4, None),
        (out4, lse4, q4, k4, k4, out4, lse4, r(5)),
    ],
    "attention_varlen_fwd": [
        (q3, k3, k3, cu(0, 4).float(), cu(0, 6), 4, 6, None), (q3, k3, k3, cu(0, 5), cu(0, 6), 5, 6, None),
        (q3, k3, k3, cu(0, 3, 1, 4), cu(0, 2, 4, 6), 3, 2, None), (q3, k3, k3, cu(0, 4), cu(0, 99), 4, 99, None),
        (q3, k3, k3, cu(0, 4), cu(0, 2, 6), 4, 4, None), (q3, k3, k3, cu(1, 4), cu(0, 6), 4, 6, None),
        (q3, k3, k3, cu(0, 4)[None], cu(0, 6)[None], 4, 6, None), (q3, k3, k3, cu(0, -4, 4), cu(0, 3, 6), 4, 6, None),
    ],
    "attention_varlen_bwd": [
        (out3, lse3, q3, k3, k3, cu(0, 4), cu(0, 7), 4, 7, out3, lse3, None),
        (out3, lse3, q3, k3, k3, cu(0, 4, 2), cu(0, 3, 6), 4, 3, out3, lse3, None),
        (out3, r(3, 2), q3, k3, k3, cu(0, 4), cu(0, 6), 4, 6, out3, lse3, None),
    ],
    "route": [
        (r(8), 2, "softmax", True, None), (r(3, 4), 5, "softmax", True, None),
        (r(3, 4), 0, "softmax", True, None), (r(3, 0), 1, "softmax", True, None),
        (r(3, 4), 2, "sigmoid", True, r(3)), (r(3, 4), 2, "nope", True, None),
    ],
    "route_bwd": [
        (r(3, 2), r(3, 4), idx[:, :1], "softmax", True, None), (r(3, 2), r(3, 4), idx[:2], "softmax", True, None),
        (r(3, 2), r(3, 4), idx.flatten(), "softmax", True, None), (r(3, 2), r(3, 4), idx.float(), "softmax", True, None),
    ],
    "moe_experts_fwd": [
        (x, idx + 5, w, gu, dn, None, None, *EXP), (x, idx - 3, w, gu, dn, None, None, *EXP),
        (x, idx, w[:, :1], gu, dn, None, None, *EXP), (x, idx, w, gu, dn[:2], None, None, *EXP),
        (x, idx, w, gu, dn, r(3, 5), None, *EXP), (x, idx, w, gu, dn, None, r(2, 8), *EXP),
        (r(3, 0), idx, w, r(3, 8, 0), r(3, 0, 4), None, None, *EXP), (x, idx.float(), w, gu, dn, None, None, *EXP),
        (x, idx, w, gu, dn, None, None, "relu", 1.0, 1.0), (x, idx[:, :0], w[:, :0], gu, dn, None, None, *EXP),
        (x, idx, w, r(3, 8, 9), dn, None, None, *EXP), (x, idx, w, r(3, 0, 8), r(3, 8, 0), None, None, *EXP),
    ],
    "moe_experts_bwd": [
        (r(3, 4), x, idx, w, gu, dn, None, None, *EXP), (x, x, idx + 5, w, gu, dn, None, None, *EXP),
        (x, x, idx, w[:2], gu, dn, None, None, *EXP), (x, x, idx, w, gu, dn[:2], None, None, *EXP),
        (x, x, idx, w, gu, dn, r(3, 5), None, *EXP),
    ],
    "moe_experts_mxfp4": [
        (x32, idx, w, gub4, gus4[:, :, :0], dnb4, dns4, None, None, *EXP),
        (x32, idx, w, gub4.float(), gus4, dnb4, dns4, None, None, *EXP),
        (x32, idx + 5, w, gub4, gus4, dnb4, dns4, None, None, *EXP),
        (x32, idx, w, gub4, gus4, dnb4[:2], dns4[:2], None, None, *EXP),
        (r(3, 16), idx, w, gub4[:, :, :8], gus4, dnb4, dns4, None, None, *EXP),
    ],
    "mxfp4_quantize": [(r(4, 30),), (torch.ones(4, 32, dtype=i64),)],
    "mxfp4_dequantize": [
        (torch.zeros(4, 16, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.uint8), f32),
        (torch.zeros(4, 16), torch.zeros(4, 1, dtype=torch.uint8), f32),
        (torch.zeros(3, 16, dtype=torch.uint8), torch.zeros(4, 1, dtype=torch.uint8), f32),
    ],
    "rms_norm_fwd": [
        (r(2, 8).int(), None, None, 1e-5), (r(2, 8), r(2, 4), None, 1e-5), (r(2, 8), None, r(3), 1e-5),
        (r(2, 8), None, r(8, 1), 1e-5),
    ],
    "rms_norm_bwd": [
        (r(2, 8), r(2, 8), r(2, 8), r(2, 8), r(2, 8), r(8), r(3), 1e-5),
        (r(2, 4), r(2, 8), r(2, 8), r(2, 8), r(2, 8), r(8), r(2), 1e-5),
        (r(2, 8), r(2, 8), r(2, 8), r(2, 8), r(1, 8), None, r(2), 1e-5),
    ],
    "rotary_fwd": [
        (r(2, 3, 4, 8).int(), r(2, 3, 2, 8), r(1, 3, 8), r(1, 3, 8), False),
        (r(2, 3, 4, 8), r(2, 4, 2, 8), r(1, 3, 8), r(1, 3, 8), False),
        (r(2, 3, 4, 7), r(2, 3, 2, 7), r(1, 3, 7), r(1, 3, 7), False),
        (r(2, 3, 4, 8), r(2, 3, 2, 8), r(3, 3, 8), r(1, 3, 8), True),
        (r(2, 3, 4, 8), r(2, 3, 2, 8), r(1, 3, 8), r(3, 8), False),
        (r(2, 3, 8), r(2, 3, 2, 8), r(1, 3, 8), r(1, 3, 8), False),
    ],
    "rotary_bwd": [(r(2, 3, 4, 8), r(2, 3, 2, 4), r(1, 3, 8), r(1, 3, 8), False),
                   (r(2, 3, 4, 8), r(2, 3, 2, 8).half(), r(1, 3, 8), r(1, 3, 8), True)],
    "gelu_fwd": [(r(2, 8).int(), "none"), (r(2, 8), "fast")],
    "gelu_bwd": [(r(2, 4), r(2, 8), "tanh"), (r(2, 8), r(2, 8), "fast")],
    "gated_activation_fwd": [(r(2, 7), "swiglu"), (r(2, 8), "relu"), (r(2, 8).int(), "geglu")],
    "gated_activation_bwd": [(r(2, 8), r(2, 8), "swiglu"), (r(2, 4), r(2, 8), "relu")],
    "linear_cross_entropy_fwd": [
        (r(2, 8), r(5, 4), idx2, -100, 0.0, True), (r(2, 8), r(5, 8).double(), idx2, -100, 0.0, True),
        (r(2, 8), r(5, 8), idx2 + 5, -100, 0.0, True), (r(2, 8), r(5, 8), idx2.int(), -100, 0.0, True),
        (r(2, 8), r(5, 8), idx2[:1], -100, 0.0, True), (r(2, 8), r(5, 8), idx2, -100, -1.0, True),
    ],
    "linear_cross_entropy_bwd": [(r(2), r(2, 8), r(5, 8), idx2, -100, 0.0, r(2, 8), r(5, 8)),
                                 (r(()), r(2, 8), r(5, 8), idx2, -100, 0.0, r(2, 4), r(5, 8))],
}
# Calls only the C++ kernels must refuse. route_bwd: only the C++ one reads logits at the given
# ids (the reference recomputes the routing, the Triton kernel compares ids with columns, so an
# id out of range cannot reach memory there). float64: the kernels compute in fp32 (the
# reference takes float64, for gradcheck).
CALLS_CPP = {
    "route_bwd": [(r(3, 2), r(3, 4), idx + 5, "softmax", True, None)],
    "attention_fwd": [(q4.double(), k4.double(), k4.double(), None)],
    "rms_norm_fwd": [(r(2, 8).double(), None, r(8).double(), 1e-5)],
    "rotary_fwd": [(r(2, 3, 4, 8).double(), r(2, 3, 2, 8).double(), r(1, 3, 8).double(),
                    r(1, 3, 8).double(), False)],
    "gelu_fwd": [(r(2, 8).double(), "none")],
    "gated_activation_fwd": [(r(2, 8).double(), "swiglu")],
}
# One valid call per op: the bad calls above differ from these in one argument, so their
# exceptions come from that argument and not from a mistake in this file.
GOOD = {
    "attention_fwd": (q4, k4, k4, r(2)),
    "attention_bwd": (out4, lse4, q4, k4, k4, out4, lse4, None),
    "attention_varlen_fwd": (q3, k3, k3, cu(0, 4), cu(0, 6), 4, 6, None),
    "attention_varlen_bwd": (out3, lse3, q3, k3, k3, cu(0, 1, 4), cu(0, 3, 6), 3, 3, out3, lse3, None),
    "route": (r(3, 4), 2, "sigmoid", True, r(4)),
    "route_bwd": (r(3, 2), r(3, 4), idx, "softmax", True, None),
    "moe_experts_fwd": (x, idx, w, gu, dn, r(3, 8), r(3, 8), *EXP),
    "moe_experts_bwd": (x, x, idx, w, gu, dn, None, None, *EXP),
    "moe_experts_mxfp4": (x32, idx, w, gub4, gus4, dnb4, dns4, None, None, *EXP),
    "mxfp4_quantize": (r(4, 32),),
    "mxfp4_dequantize": (torch.zeros(4, 16, dtype=torch.uint8), torch.zeros(4, 1, dtype=torch.uint8), f32),
    "rms_norm_fwd": (r(2, 8), r(2, 8), r(8), 1e-5),
    "rms_norm_bwd": (r(2, 8), r(2, 8), r(2, 8), r(2, 8), r(2, 8), r(8), r(2), 1e-5),
    "rotary_fwd": (r(2, 3, 4, 8), r(2, 3, 2, 8), r(1, 3, 8), r(1, 3, 8), False),
    "rotary_bwd": (r(2, 3, 4, 8), r(2, 3, 2, 8), r(2, 3, 8), r(2, 3, 8), True),
    "gelu_fwd": (r(2, 8), "none"),
    "gelu_bwd": (r(2, 8), r(2, 8), "tanh"),
    "gated_activation_fwd": (r(2, 8), "swiglu"),
    "gated_activation_bwd": (r(2, 4), r(2, 8), "geglu"),
    "linear_cross_entropy_fwd": (r(2, 8), r(5, 8), idx2, -100, 0.0, True),
    "linear_cross_entropy_bwd": (r(()), r(2, 8), r(5, 8), idx2, -100, 0.0, r(2, 8), r(5, 8)),
}
ATTENTION = {"attention_fwd", "attention_bwd", "attention_varlen_fwd", "attention_varlen_bwd"}


def calls(prefix, table):
    """(label, op, args) for every call in `table` to the ops that `prefix` defines."""
    for name, arg_lists in table.items():
        if not hasattr(ops, prefix + name):
            continue
        op = getattr(ops, prefix + name)
        for i, args in enumerate(arg_lists):
            yield f"{name}[{i}]", op, args + (FLAGS if name in ATTENTION else ())


if __name__ == "__main__":
    prefix = sys.argv[1]
    for label, op, args in calls(prefix, {name: [args] for name, args in GOOD.items()}):
        print(f"good {label}", flush=True)
        op(*args)                  # raises (and fails the parent's test) if a valid call fails
    bad = dict(CALLS)
    if prefix == "":
        bad.update({name: CALLS[name] + extra for name, extra in CALLS_CPP.items()})
    for label, op, args in calls(prefix, bad):
        print(f"start {label}", flush=True)
        try:
            op(*args)
        except Exception as err:   # any Python exception is the right outcome
            print(f"ok {label}: {type(err).__name__}: {str(err).splitlines()[0][:200]}", flush=True)
        else:
            print(f"fail {label}: returned without an exception", flush=True)
    print("done", flush=True)
