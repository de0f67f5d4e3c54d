"""The LM head with its loss: gptcore.linear_cross_entropy, and the specs of its ops
(linear_cross_entropy_fwd / _bwd: schema, check, fake, autograd, reference).

The forward op works through the tokens in chunks: one chunk's fp32 logits (chunk, V) at a time,
never the whole (N, V), and when gradients are wanted it computes d loss / d x and d loss /
d weight in the same pass (the softmax of a chunk is at hand then), so backward only scales them
by the incoming gradient. Memory beyond the inputs: one chunk of logits, dx and dweight."""
import torch

from gptcore import ref
from gptcore.ops import validate
from gptcore.ops.spec import declare, differentiate, run
from gptcore.ops.validate import FLOAT_DTYPES


def linear_cross_entropy(x, weight, target, ignore_index=-100, z_loss=0.0):
    """x (..., d), weight (V, d) (the LM head, as nn.Linear's), target (...) int64 ->
    scalar fp32 loss: mean over tokens whose target != ignore_index of the cross-entropy of
    logits = x @ weight^T, plus z_loss * logsumexp(logits)**2 (PaLM's z-loss) when z_loss > 0.
    A batch with no kept token gives 0 and zero gradients. The (tokens, V) logits are never
    stored whole."""
    validate.tensor("x", x, dtypes=FLOAT_DTYPES)
    validate.tensor("target", target)
    if x.dim() < 1 or tuple(target.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"target: expected shape {tuple(x.shape[:-1])} (x's without its last "
                         f"dim), got {tuple(target.shape)}")
    with_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    loss, _, _ = run("linear_cross_entropy_fwd", x.device, x.reshape(-1, x.shape[-1]), weight,
                     target.reshape(-1), ignore_index, float(z_loss), with_grad)
    return loss


# ----------------------------------------------------------------------------- checks

def check_fwd(x, weight, target, ignore_index, z_loss, with_grad, dtypes=FLOAT_DTYPES):
    validate.tensor("x", x, ndim=2, dtypes=dtypes)
    validate.tensor("weight", weight, ndim=2, dtypes=dtypes)
    validate.same_dtype(("x", "weight"), (x, weight))
    validate.same_device("weight", weight, x)
    if weight.shape[0] < 1 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight: expected shape (V, {x.shape[1]}) (x's last dim, V >= 1), "
                         f"got {tuple(weight.shape)}")
    validate.tensor("target", target, ndim=1, dtypes=(torch.int64,))
    validate.same_device("target", target, x)
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target: expected shape ({x.shape[0]},) (one per row of x), got "
                         f"{tuple(target.shape)}")
    validate.integer("ignore_index", ignore_index, -2**63)
    if isinstance(z_loss, bool) or not isinstance(z_loss, (int, float)) or not z_loss >= 0:
        raise ValueError(f"z_loss: expected a number >= 0, got {z_loss!r}")
    if validate.eager() and target.numel():
        bad = (target != ignore_index) & ((target < 0) | (target >= weight.shape[0]))
        if bool(bad.any()):
            raise ValueError(f"target: expected ids in [0, {weight.shape[0]}) or ignore_index="
                             f"{ignore_index}, got {int(target[bad][0])}")


def check_bwd(dloss, x, weight, target, ignore_index, z_loss, dx, dweight, dtypes=FLOAT_DTYPES):
    check_fwd(x, weight, target, ignore_index, z_loss, True, dtypes)
    validate.tensor("dloss", dloss, ndim=0, dtypes=(torch.float32,) + tuple(dtypes))
    for name, t, like in (("dx", dx, x), ("dweight", dweight, weight)):
        validate.tensor(name, t, dtypes=dtypes)
        if t.shape != like.shape:
            raise ValueError(f"{name}: expected shape {tuple(like.shape)}, got {tuple(t.shape)}")


# ----------------------------------------------------------------------------- reference

def reference_fwd(x, weight, target, ignore_index, z_loss, with_grad):
    if not with_grad:
        loss = ref.linear_cross_entropy(x, weight, target, ignore_index, z_loss)
        return loss.float(), x.new_empty(0), weight.new_empty(0)
    one = torch.ones((), dtype=torch.float32, device=x.device)
    dx, dweight = reference_bwd(one, x, weight, target, ignore_index, z_loss, None, None)
    return ref.linear_cross_entropy(x, weight, target, ignore_index, z_loss).float(), dx, dweight


def reference_bwd(dloss, x, weight, target, ignore_index, z_loss, dx, dweight):
    """Recomputes the forward under autograd (the saved dx, dweight are not read)."""
    def forward(x, weight):
        return ref.linear_cross_entropy(x, weight, target, ignore_index, z_loss)
    return differentiate(forward, (x, weight), dloss.to(torch.promote_types(x.dtype,
                                                                            torch.float32)))


# ----------------------------------------------------------------------------- fakes, autograd

def _fwd_fake(x, weight, target, ignore_index, z_loss, with_grad):
    loss = x.new_empty((), dtype=torch.float32)
    if not with_grad:
        return loss, x.new_empty(0), weight.new_empty(0)
    return loss, x.new_empty(x.shape), weight.new_empty(weight.shape)


def _autograd(bwd_name):
    def setup(ctx, inputs, output):
        x, weight, target, ignore_index, z_loss, with_grad = inputs
        ctx.options, ctx.with_grad = (ignore_index, z_loss), with_grad
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(x, weight, target, output[1], output[2])

    def backward(ctx, dloss, _dx, _dweight):
        if not ctx.with_grad:
            raise RuntimeError("linear_cross_entropy_fwd: called with with_grad=False, so it "
                               "computed no gradients to give backward")
        x, weight, target, dx, dweight = ctx.saved_tensors
        gx, gw = getattr(torch.ops.gptcore, bwd_name)(dloss, x, weight, target, *ctx.options,
                                                      dx, dweight)
        return gx, gw, None, None, None, None
    return setup, backward


declare(name="linear_cross_entropy_fwd", schema="(Tensor x, Tensor weight, Tensor target, "
        "int ignore_index, float z_loss, bool with_grad) -> (Tensor, Tensor, Tensor)",
        check=check_fwd, fake=_fwd_fake, reference=reference_fwd,
        backward="linear_cross_entropy_bwd", autograd=_autograd)
declare(name="linear_cross_entropy_bwd", schema="(Tensor dloss, Tensor x, Tensor weight, "
        "Tensor target, int ignore_index, float z_loss, Tensor dx, Tensor dweight) "
        "-> (Tensor, Tensor)", check=check_bwd,
        fake=lambda dloss, x, weight, target, ignore_index, z_loss, dx, dweight:
        (x.new_empty(x.shape), weight.new_empty(weight.shape)), reference=reference_bwd)
