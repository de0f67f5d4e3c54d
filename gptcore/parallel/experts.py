"""Expert parallelism for gptcore.nn.MoE: each process keeps a contiguous slice of every MoE
layer's experts and tokens travel to them by all_to_all. The exchange follows the all-to-all
dispatch of torchtitan's ExpertParallel and Megatron-Core's MoEAlltoAllTokenDispatcher: counts
first, then the tokens, then back. It is installed from outside the model, as torchtitan's
parallelize does: the layer keeps its class and gets a dispatch strategy (MoE.dispatch)."""
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from gptcore import ops
from gptcore.nn import MoE

SHARDED = ("gate_up_proj", "down_proj", "gate_up_bias", "down_bias")   # sliced on dim 0


class _AllToAll(torch.autograd.Function):
    """dist.all_to_all_single with uneven splits, differentiable: the gradient of a row goes
    back to the process that sent it, so backward is the same exchange with the splits swapped."""

    @staticmethod
    def forward(ctx, rows, recv_splits, send_splits, group):
        ctx.splits, ctx.group = (recv_splits, send_splits), group
        out = rows.new_empty((sum(recv_splits),) + tuple(rows.shape[1:]))
        dist.all_to_all_single(out, rows.contiguous(), recv_splits, send_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        recv_splits, send_splits = ctx.splits
        return _AllToAll.apply(grad_out, send_splits, recv_splits, ctx.group), None, None, None


def all_to_all(rows, recv_splits, send_splits, group=None):
    """rows (sum(send_splits), ...) -> (sum(recv_splits), ...): send_splits[r] rows go to rank r,
    recv_splits[r] rows come from rank r, in rank order. Differentiable in rows."""
    return _AllToAll.apply(rows, list(recv_splits), list(send_splits), group)


class ExpertParallel:
    """MoE.dispatch of a layer whose routed experts are spread over a process group: this process
    holds experts [offset, offset + n_local) under the layer's usual parameter names; the
    router, its bias and the shared experts are replicated. Installed by `expert_parallel`."""

    def __init__(self, group, n_local, offset):
        self.group, self.n_local, self.offset = group, n_local, offset

    def __call__(self, layer, x):
        """x (T, H) -> (y (T, H), aux): route here, run the experts where they live."""
        T, k, E = x.shape[0], layer.top_k, layer.n_experts
        W, E_local = dist.get_world_size(self.group), self.n_local
        logits = layer.router(x)                                           # (T, E)
        weights, indices = ops.route(logits, k, scoring=layer.scoring,
                                     renormalize=layer.renormalize, bias=layer.expert_bias)
        # (token, choice) pairs sorted by expert, hence by the rank that owns the expert
        order = torch.argsort(indices.reshape(-1), stable=True)            # (T*k,)
        sent_per_expert = torch.bincount(indices.reshape(-1), minlength=E)  # (E,)
        recv_per_expert = torch.empty_like(sent_per_expert)                # (W*E_local,)
        dist.all_to_all_single(recv_per_expert, sent_per_expert, group=self.group)
        send_splits = sent_per_expert.view(W, E_local).sum(1).tolist()
        recv_splits = recv_per_expert.view(W, E_local).sum(1).tolist()

        received = all_to_all(x[order // k], recv_splits, send_splits, self.group)  # (N, H)
        # received rows come rank by rank, each rank's rows ordered by local expert
        local_expert = torch.arange(E_local, device=x.device).repeat(W)   # (W*E_local,)
        local_expert = local_expert.repeat_interleave(recv_per_expert)[:, None]     # (N, 1)
        unit = torch.ones(local_expert.shape, dtype=torch.float32, device=x.device)
        expert_out = ops.moe_experts(received, local_expert, unit, layer.gate_up_proj,
                                     layer.down_proj, activation=layer.activation,
                                     gate_up_bias=layer.gate_up_bias,
                                     down_bias=layer.down_bias)            # (N, H)
        returned = all_to_all(expert_out, send_splits, recv_splits, self.group)  # (T*k, H)

        per_choice = returned[torch.argsort(order)].view(T, k, x.shape[1])  # (T, k, H)
        y = (per_choice.float() * weights[..., None]).sum(1).to(x.dtype)  # (T, H)
        aux = {"router_logits": logits,
               "load_balancing_loss": ops.load_balancing_loss(logits, indices, E),
               "z_loss": ops.router_z_loss(logits),
               "tokens_per_expert": sent_per_expert}
        return y, aux

    def remote_params(self, layer):
        """Parameters of the layer's experts that other processes hold."""
        per_expert = sum(getattr(layer, n)[0].numel() for n in SHARDED
                         if getattr(layer, n) is not None)
        return (layer.n_experts - self.n_local) * per_expert

    def __repr__(self):
        return f"ExpertParallel(local experts [{self.offset}, {self.offset + self.n_local}))"


def expert_parallel(module, group=None):
    """Convert, in place, every gptcore.nn.MoE inside `module` (built identically on every rank
    of `group`, a process group or a 1-D DeviceMesh, e.g. from the same seed) so that rank r keeps only experts
    [r * E / W, (r + 1) * E / W) and exchanges tokens with the other ranks; returns `module`.

    The output for each rank's tokens is what the unconverted layer gives for them. Backward
    leaves each rank the gradients of its own experts summed over the tokens of every rank;
    router and shared-expert gradients are local (all-reduce them, e.g. with DDP). Convert
    before building the optimizer: the expert parameters are new, smaller tensors. Every rank
    must call forward (and backward) the same number of times, even with an empty batch."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("expert_parallel: torch.distributed is not initialized; call "
                           "torch.distributed.init_process_group first (torchrun sets the "
                           "environment for it)")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if isinstance(group, DeviceMesh):
        if group.ndim != 1:
            raise ValueError(f"group: expected a 1-D DeviceMesh (the expert-parallel dim), got "
                             f"{group.ndim} dims")
        group = group.get_group()
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group: expected a torch.distributed.ProcessGroup, a 1-D DeviceMesh "
                        f"or None, got {type(group).__name__}")
    layers = [m for m in module.modules() if isinstance(m, MoE)]
    if not layers:
        raise ValueError(f"module: expected at least one gptcore.nn.MoE inside, found none in "
                         f"{type(module).__name__}")
    W, rank = dist.get_world_size(group), dist.get_rank(group)
    for layer in layers:
        if layer.dispatch is not None:
            raise ValueError("module: already converted by expert_parallel")
        if layer.n_experts % W:
            raise ValueError(f"group: n_experts={layer.n_experts} must be divisible by the "
                             f"group's world size, got world size {W}")
    for layer in layers:
        E_local = layer.n_experts // W
        keep = slice(rank * E_local, (rank + 1) * E_local)
        for name in SHARDED:
            full = getattr(layer, name)
            if full is not None:
                setattr(layer, name, torch.nn.Parameter(full.detach()[keep].clone(),
                                                        requires_grad=full.requires_grad))
        layer.dispatch = ExpertParallel(group, E_local, keep.start)
    return module


def expert_parameters(module):
    """{qualified name: parameter} of the expert slices expert_parallel left in `module`: the
    parameters that differ between ranks (not all-reduced; saved as shards of dim 0)."""
    found = {}
    for prefix, layer in module.named_modules():
        if isinstance(layer, MoE) and isinstance(layer.dispatch, ExpertParallel):
            for name in SHARDED:
                if getattr(layer, name) is not None:
                    found[f"{prefix}.{name}" if prefix else name] = getattr(layer, name)
    return found
