"""MLP activations: gptcore.gelu (exact and tanh) and gptcore.gated_activation (SwiGLU, GeGLU
from one gate_up projection), and the specs of their ops (gelu_fwd / _bwd,
gated_activation_fwd / _bwd: schema, check, fake, autograd, reference). The backward ops
recompute the activation from its input: nothing but the input is saved."""
import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, differentiate, run
from gptcore.ops.validate import FLOAT_DTYPES

APPROXIMATIONS = ("none", "tanh")
GATED_KINDS = ("swiglu", "geglu")


def gelu(x, approximate="none"):
    """x (...) -> gelu(x) (...): x * Phi(x), or its tanh approximation (GPT-2's) with
    approximate="tanh", as torch.nn.functional.gelu. fp32 arithmetic."""
    validate.tensor("x", x, dtypes=FLOAT_DTYPES)
    validate.choice("approximate", approximate, APPROXIMATIONS)
    return run("gelu_fwd", x.device, x, approximate)


def gated_activation(gate_up, kind):
    """gate_up (..., 2I), one projection's output with the gate in [..., :I] and the up
    projection in [..., I:] -> act(gate) * up (..., I). kind "swiglu": act = silu (Llama,
    Mistral, Qwen); "geglu": act = gelu, tanh form (Gemma). The halves are never copied out."""
    validate.tensor("gate_up", gate_up, dtypes=FLOAT_DTYPES)
    validate.choice("kind", kind, GATED_KINDS)
    return run("gated_activation_fwd", gate_up.device, gate_up, kind)


# ----------------------------------------------------------------------------- checks

def check_gelu_fwd(x, approximate, dtypes=FLOAT_DTYPES):
    validate.tensor("x", x, dtypes=dtypes)
    validate.choice("approximate", approximate, APPROXIMATIONS)


def check_gelu_bwd(dy, x, approximate, dtypes=FLOAT_DTYPES):
    check_gelu_fwd(x, approximate, dtypes)
    validate.tensor("dy", dy, dtypes=dtypes)
    if dy.shape != x.shape:
        raise ValueError(f"dy: expected shape {tuple(x.shape)}, got {tuple(dy.shape)}")


def check_gated_fwd(gate_up, kind, dtypes=FLOAT_DTYPES):
    validate.tensor("gate_up", gate_up, dtypes=dtypes)
    validate.choice("kind", kind, GATED_KINDS)
    if gate_up.dim() < 1 or gate_up.shape[-1] % 2:
        raise ValueError("gate_up: expected a last dim of even size (gate and up halves), got "
                         f"shape {tuple(gate_up.shape)}")


def check_gated_bwd(dy, gate_up, kind, dtypes=FLOAT_DTYPES):
    check_gated_fwd(gate_up, kind, dtypes)
    validate.tensor("dy", dy, dtypes=dtypes)
    want = (*gate_up.shape[:-1], gate_up.shape[-1] // 2)
    if tuple(dy.shape) != want:
        raise ValueError(f"dy: expected shape {want}, got {tuple(dy.shape)}")


# ----------------------------------------------------------------------------- reference

def reference_gelu_bwd(dy, x, approximate):
    return differentiate(lambda x: ref.gelu(x, approximate), (x,), dy)[0]


def reference_gated_bwd(dy, gate_up, kind):
    return differentiate(lambda g: ref.gated_activation(g, kind), (gate_up,), dy)[0]


# ----------------------------------------------------------------------------- fakes, autograd

def _gated_fake(gate_up, kind):
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


def _autograd(bwd_name):
    """Autograd for an activation op (input, option) -> output: saves only the input."""
    def setup(ctx, inputs, output):
        ctx.option = inputs[1]
        ctx.save_for_backward(inputs[0])

    def backward(ctx, dy):
        x, = ctx.saved_tensors
        return getattr(torch.ops.gptcore, bwd_name)(dy, x, ctx.option), None
    return setup, backward


declare(name="gelu_fwd", schema="(Tensor x, str approximate) -> Tensor", check=check_gelu_fwd,
        fake=lambda x, approximate: x.new_empty(x.shape), reference=ref.gelu,
        backward="gelu_bwd", autograd=_autograd)
declare(name="gelu_bwd", schema="(Tensor dy, Tensor x, str approximate) -> Tensor",
        check=check_gelu_bwd, fake=lambda dy, x, approximate: x.new_empty(x.shape),
        reference=reference_gelu_bwd)
declare(name="gated_activation_fwd", schema="(Tensor gate_up, str kind) -> Tensor",
        check=check_gated_fwd, fake=_gated_fake, reference=ref.gated_activation,
        backward="gated_activation_bwd", autograd=_autograd)
declare(name="gated_activation_bwd", schema="(Tensor dy, Tensor gate_up, str kind) -> Tensor",
        check=check_gated_bwd, fake=lambda dy, gate_up, kind: gate_up.new_empty(gate_up.shape),
        reference=reference_gated_bwd)
