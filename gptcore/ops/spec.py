"""One spec per op: its schema, its argument check, its fake (meta) implementation, its autograd
formula and its reference implementation, in one record (OpSpec). The op families declare
theirs (ops/attention.py, ops/route.py, ops/moe_experts.py, ops/mxfp4.py); everything else reads
them from SPECS:

  backends   each defines its ops under its own prefix in the `gptcore` namespace:
               C++ extension  torch.ops.gptcore.<name>          (gptcore/backends/cpp)
               Triton         torch.ops.gptcore.triton_<name>   (gptcore/backends/triton)
               reference      torch.ops.gptcore.ref_<name>      (gptcore/backends/ref)
             `define` wraps every Python implementation with the spec's check, so a direct
             torch.ops call is checked too; the C++ ops check in csrc/common/checks.h
             (tests/test_op_checks.py holds the two to the same exception types).
  dispatch   `run(name, device, *args)` checks the arguments once, then calls the op of the
             backend chosen for the device (gptcore.ops.backend), which torch.compile sees as
             one node.

A backward op takes the forward's inputs and outputs and returns one gradient per
differentiable input (an empty tensor where that input was None). Every op returns contiguous
tensors, whatever the strides of its inputs.
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch._C import _AutoDispatchBelowAutograd as _below_autograd
from torch.autograd import forward_ad

from gptcore.ops.validate import FLOAT_DTYPES


@dataclass(frozen=True)
class OpSpec:
    name: str                      # the op is torch.ops.gptcore.<backend prefix><name>
    schema: str                    # its torch.library schema without the name
    check: Callable                # check(*args, dtypes=FLOAT_DTYPES) raises on arguments it cannot take
    fake: Callable                 # outputs' shapes and dtypes, for torch.compile and opcheck
    reference: Callable            # the pure-PyTorch implementation: ref backend and test oracle
    backward: str | None = None    # the op that computes this op's gradients
    autograd: Callable | None = None  # autograd(backward op) -> (setup_context, backward)


SPECS = {}                         # name -> OpSpec, filled as the op families are imported
_lib = torch.library.Library("gptcore", "FRAGMENT")


def declare(**fields):
    """Adds one op's spec to SPECS."""
    spec = OpSpec(**fields)
    SPECS[spec.name] = spec
    return spec


def _checked(spec, fn, dtypes):
    """fn behind the spec's check, returning contiguous tensors (the fakes promise it)."""
    def op(*args):
        spec.check(*args, dtypes=dtypes)
        out = fn(*args)
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return tuple(t.contiguous() for t in out)
    return op


def define(prefix, impls, dispatch_keys, dtypes=FLOAT_DTYPES):
    """Defines `gptcore::<prefix><name>` for each name -> Python implementation, for the given
    devices, each behind its spec's check; then fakes and autograd."""
    for name, fn in impls.items():
        _lib.define(prefix + name + SPECS[name].schema)
        for key in dispatch_keys:
            _lib.impl(prefix + name, _checked(SPECS[name], fn, dtypes), key)
    register_meta(prefix, impls.keys())


def define_schemas(names):
    """Schemas for ops whose kernels a C++ library registered under the bare name."""
    for name in names:
        _lib.define(name + SPECS[name].schema)
    register_meta("", names)


def register_meta(prefix, names):
    """Fake kernels for ops `<prefix><name>`, and autograd for forward ops whose backward op
    exists under the same prefix."""
    names = set(names)
    for name in names:
        torch.library.register_fake(f"gptcore::{prefix}{name}", SPECS[name].fake, lib=_lib)
    for name in names:
        spec = SPECS[name]
        if spec.backward in names:
            setup, backward = spec.autograd(prefix + spec.backward)
            torch.library.register_autograd(f"gptcore::{prefix}{name}", backward,
                                            setup_context=setup, lib=_lib)


def has_op(qualname, dispatch_key):
    """Whether op `gptcore::<qualname>` exists with a kernel for `dispatch_key`."""
    name = f"gptcore::{qualname}"
    return (torch._C._dispatch_has_kernel(name)
            and torch._C._dispatch_has_kernel_for_dispatch_key(name, dispatch_key))


def run(name, device, *args):
    """Checks the arguments of op `name` once, then calls the op of the backend chosen for
    `device` (gptcore.ops.backend.select)."""
    from gptcore.ops.backend import select
    SPECS[name].check(*args)
    return call(select(name, device), *args)


def call(op, *args):
    """op(*args), straight to its kernel when there is nothing to differentiate.

    An op with a Python autograd formula (torch.library.register_autograd) passes through that
    Python layer on every call, grad or no grad (docs/quantize.md measures what it costs a
    decode step); below autograd the dispatcher goes to the kernel directly. Tracing
    (torch.compile) and functorch transforms keep the full dispatch: they need to see the op."""
    if _autograd_needed(op, args):
        return op(*args)
    with _below_autograd():
        return op(*args)


def _autograd_needed(op, args):
    """Whether a call with these arguments needs autograd's dispatch key."""
    if torch.compiler.is_compiling():
        return True
    if forward_ad._current_level >= 0:
        _refuse_tangents(op, args)
    if torch._C._are_functorch_transforms_active():
        return True
    if torch.is_grad_enabled():
        for a in args:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                return True
    return False


def _refuse_tangents(op, args):
    """Raises on forward-mode AD (dual tensors, torch.func.jvp), which the ops do not implement:
    torch would drop the tangent silently (a zero tangent)."""
    for a in args:
        if isinstance(a, torch.Tensor) and forward_ad.unpack_dual(a).tangent is not None:
            raise NotImplementedError(
                f"{op._qualified_op_name}: forward-mode AD (dual tensors, torch.func.jvp) is not "
                "supported by gptcore's ops; use reverse mode (backward, torch.autograd.grad)")


# ----------------------------------------------------------------------------- reference gradients
# A reference backward op recomputes its forward under autograd and differentiates it, so the
# reference's gradients are torch's own.

def _autograd_on():
    """Autograd inside a kernel: grad mode on, and the autograd dispatch keys back in play.

    A kernel reached through a TorchDispatchMode (opcheck, FlopCounterMode, fake tensors) runs
    with the autograd keys excluded, and recomputing the forward there records no graph."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def differentiate(forward, inputs, grad_outputs):
    """Gradients of `forward(*leaves)` for each tensor of `inputs` (None entries pass through as
    None into forward): zeros where unused, an empty tensor for None. Outputs that depend on
    no input (empty ones, say Sq = 0) add nothing."""
    with torch.enable_grad(), _autograd_on():
        leaves = [None if t is None else t.detach().requires_grad_(t.is_floating_point())
                  for t in inputs]
        outputs = forward(*leaves)
        if isinstance(outputs, torch.Tensor):
            outputs, grad_outputs = (outputs,), (grad_outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
        live = [t for t in leaves if t is not None and t.requires_grad]
        found = torch.autograd.grad([o for o, _ in pairs], live, [g for _, g in pairs],
                                    allow_unused=True) if pairs and live else [None] * len(live)
    grads = dict(zip(map(id, live), found))
    first = next(t for t in inputs if t is not None)
    return tuple(first.new_empty(0) if t is None else
                 (grads.get(id(leaf)) if grads.get(id(leaf)) is not None else t.new_zeros(t.shape))
                 for t, leaf in zip(inputs, leaves))
