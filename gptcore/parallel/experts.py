"""Scaling out on torch.distributed: expert parallelism for gptcore.nn.MoE (each process keeps a
contiguous slice of the experts and tokens travel to them by all_to_all), and the data-parallel
training hooks `gptcore train` uses under torchrun (process group from the environment, DDP
that leaves expert parameters alone, torch.distributed.checkpoint saves that load at any
world size). The token exchange follows the all-to-all dispatch of torchtitan's ExpertParallel
and Megatron-Core's MoEAlltoAllTokenDispatcher: counts first, then the tokens, then back."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard
from torch.nn.parallel import DistributedDataParallel

from gptcore import ops
from gptcore.nn import MoE

SHARDED = ("gate_up_proj", "down_proj", "gate_up_bias", "down_bias")   # sliced on dim 0
DCP_DIR = "dcp"      # torch.distributed.checkpoint's files inside a training output directory


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


class ExpertParallelMoE(MoE):
    """A gptcore.nn.MoE whose routed experts are spread over a process group: this process holds
    experts [expert_offset, expert_offset + n_local_experts) under the usual parameter names;
    the router, its bias and the shared experts are replicated. Made by `expert_parallel`."""

    def _routed_experts(self, x):
        T, k, E = x.shape[0], self.top_k, self.n_experts
        W, E_local = dist.get_world_size(self.group), self.n_local_experts
        logits = self.router(x)                                            # (T, E)
        weights, indices = ops.route(logits, k, scoring=self.scoring,
                                     renormalize=self.renormalize, bias=self.expert_bias)
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
        expert_out = ops.moe_experts(received, local_expert, unit, self.gate_up_proj,
                                     self.down_proj, activation=self.activation,
                                     gate_up_bias=self.gate_up_bias,
                                     down_bias=self.down_bias)             # (N, H)
        returned = all_to_all(expert_out, send_splits, recv_splits, self.group)  # (T*k, H)

        per_choice = returned[torch.argsort(order)].view(T, k, x.shape[1])  # (T, k, H)
        y = (per_choice.float() * weights[..., None]).sum(1).to(x.dtype)  # (T, H)
        aux = {"router_logits": logits,
               "load_balancing_loss": ops.load_balancing_loss(logits, indices, E),
               "z_loss": ops.router_z_loss(logits),
               "tokens_per_expert": sent_per_expert}
        return y, aux

    def _other_experts_params(self):
        per_expert = sum(getattr(self, n)[0].numel() for n in SHARDED
                         if getattr(self, n) is not None)
        return (self.n_experts - self.n_local_experts) * per_expert

    @property
    def total_params(self):
        """Of the whole layer, every process's experts included (active_params follows)."""
        return sum(p.numel() for p in self.parameters()) + self._other_experts_params()

    def extra_repr(self):
        return (super().extra_repr() + f", local experts [{self.expert_offset}, "
                f"{self.expert_offset + self.n_local_experts})")


def expert_parallel(module, group=None):
    """Convert, in place, every gptcore.nn.MoE inside `module` (built identically on every rank
    of `group`, e.g. from the same seed) so that rank r keeps only experts
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
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group: expected a torch.distributed.ProcessGroup or None, got "
                        f"{type(group).__name__}")
    layers = [m for m in module.modules() if isinstance(m, MoE)]
    if not layers:
        raise ValueError(f"module: expected at least one gptcore.nn.MoE inside, found none in "
                         f"{type(module).__name__}")
    W, rank = dist.get_world_size(group), dist.get_rank(group)
    for layer in layers:
        if isinstance(layer, ExpertParallelMoE):
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
        # the same object, now with the exchange: references to it elsewhere stay valid
        layer.__class__ = ExpertParallelMoE
        layer.group, layer.n_local_experts, layer.expert_offset = group, E_local, keep.start
    return module


def expert_parameters(module):
    """{qualified name: parameter} of the expert slices expert_parallel left in `module`: the
    parameters that differ between ranks (not all-reduced; saved as shards of dim 0)."""
    found = {}
    for prefix, layer in module.named_modules():
        if isinstance(layer, ExpertParallelMoE):
            for name in SHARDED:
                if getattr(layer, name) is not None:
                    found[f"{prefix}.{name}" if prefix else name] = getattr(layer, name)
    return found


# ----------------------------------------------------------------------------- training hooks

@dataclass
class Context:
    """Where this process stands in a torchrun job: its rank, the world size, its device."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def logging(self):
        """Only rank 0 prints, plots and writes files meant for people."""
        return self.rank == 0

    # the hooks gptcore.training.train calls when it is given a Context

    def step_stats(self, loss, tokens):
        """(this rank's loss term, its tokens) -> (the job's loss: the mean of the ranks' terms,
        the job's tokens), for the log, in one all-reduce."""
        both = torch.tensor([float(loss), float(tokens)], dtype=torch.float64, device=self.device)
        dist.all_reduce(both)
        return both[0].item() / self.world_size, int(both[1].item())

    def agree(self, seconds):
        """Rank 0's clock for everyone: a time budget and the schedule it drives must stop and
        decay at the same step on every rank, or the collectives of the next step hang."""
        value = torch.tensor([float(seconds)], dtype=torch.float64, device=self.device)
        dist.broadcast(value, 0)
        return value.item()

    def clip_grad_norm_(self, model, max_norm):
        return clip_grad_norm_(getattr(model, "module", model), max_norm)

    def num_params(self, model, active=False):
        """GPT.num_params of the whole job's model: every rank's experts counted."""
        model = getattr(model, "module", model)
        return model.num_params(active=active) + sum(
            m._other_experts_params() for m in model.modules()
            if isinstance(m, ExpertParallelMoE))

    def save(self, out_dir, model, optimizer, state, meta, keep=2):
        """A checkpoint in gptcore.training.checkpoint's layout, written atomically: every rank
        writes its shards into the staging directory rank 0 chose (under dcp/), then rank 0
        adds config.json and state.json and commits it. Returns its directory."""
        from gptcore.training import atomic, checkpoint
        model = getattr(model, "module", model)
        paths = list(checkpoint.begin(out_dir, state["step"])) if self.logging else [None, None]
        dist.broadcast_object_list(paths, 0)
        tmp, target = paths
        save_checkpoint(tmp / DCP_DIR, model, optimizer)
        dist.barrier()                 # every shard is on disk before rank 0 commits
        if self.logging:
            payload = json.dumps(checkpoint.config_payload(model, meta), indent=2)
            atomic.write_file(tmp / "config.json", payload.encode())
            atomic.write_file(tmp / "state.json", json.dumps(state).encode())
            checkpoint.finish(out_dir, tmp, target, keep)
        dist.barrier()
        return target

    def load(self, ckpt_dir, model, optimizer):
        """state.json's dict after filling model and optimizer from a checkpoint directory's
        dcp/ shards (saved at any world size)."""
        ckpt_dir = Path(ckpt_dir)
        if not (ckpt_dir / DCP_DIR / ".metadata").exists():
            raise ValueError(f"out_dir: {ckpt_dir} was written by a single process; resume it "
                             f"without torchrun")
        load_checkpoint(ckpt_dir / DCP_DIR, getattr(model, "module", model), optimizer)
        return json.loads((ckpt_dir / "state.json").read_text())

    def any(self, flag):
        """True on every rank when `flag` is true on any (a stop request must stop all ranks
        at the same step)."""
        value = torch.tensor([float(flag)], dtype=torch.float64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def init_from_env():
    """Join the job torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT) and return its Context: nccl with one GPU per local rank when CUDA is
    there, gloo on CPU. None without torchrun (no WORLD_SIZE): a plain single process."""
    if "WORLD_SIZE" not in os.environ:
        return None
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def per_rank(batch_size, world_size):
    """Each rank's share of a global batch of `batch_size` documents."""
    if batch_size % world_size:
        raise ValueError(f"batch_size: the global batch ({batch_size}) must divide evenly "
                         f"among the {world_size} processes")
    return batch_size // world_size


def data_parallel(model, *, experts_parallel=False):
    """Wrap `model` (the same on every rank) for data-parallel training on the default group:
    DDP all-reduces (averages) the replicated parameters' gradients. With experts_parallel,
    expert_parallel converts it first, on a group of its own (the token exchange never queues
    behind DDP's all-reduce), and DDP leaves the expert slices alone: their gradients already
    sum every rank's tokens, so a hook divides them by the world size to match the average."""
    world = dist.get_world_size()
    if experts_parallel:
        expert_parallel(model, dist.new_group())
        experts = expert_parameters(model)
        for p in experts.values():
            p.register_hook(lambda grad: grad / world)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(experts))
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _job_total(value, device):
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total


def balance_loss(model):
    """The Switch load-balancing loss (gptcore.load_balancing_loss, summed over the MoE layers of
    the last forward) of the job's global batch, as this rank's term: expert fractions f_e from
    every rank's token counts, this rank's router probabilities over the job's token count,
    times the world size, so that DDP's average of the terms has the value and the gradient
    one process computes on the global batch. None without MoE layers."""
    layers = [m for m in model.modules() if isinstance(m, MoE) and m.aux]
    if not layers:
        return None
    logits = [m.aux["router_logits"] for m in layers]                   # L x (T, E)
    counts = torch.stack([m.aux["tokens_per_expert"] for m in layers]).double()   # (L, E)
    packed = torch.cat([counts.flatten(), counts.new_tensor([logits[0].shape[0]])])
    dist.all_reduce(packed)
    job_tokens = packed[-1].clamp(min=1)
    fractions = (packed[:-1].view(counts.shape) / job_tokens).float()   # (L, E)
    world = dist.get_world_size()
    return sum(l.shape[1] * (f * l.float().softmax(-1).sum(0)).sum() * world / job_tokens.item()
               for l, f in zip(logits, fractions))


def next_token_loss(model, batch):
    """gptcore.training.train.next_token_loss for one rank of a data-parallel job: (optimised, logged)
    terms whose average over the ranks (DDP's) is what one process computes on the global
    batch. The cross-entropy is weighted by the rank's share of the loss tokens (they fall
    unevenly between ranks), the load-balancing loss is the global batch's (balance_loss)."""
    from gptcore.training.train import count_tokens
    _, ce = model(batch["idx"], batch["targets"], cu_seqlens=batch.get("cu_seqlens"),
                  max_seqlen=batch.get("max_seqlen"))
    local = count_tokens(batch)
    ce = ce * (local * dist.get_world_size() / _job_total(local, ce.device).clamp(min=1))
    inner = getattr(model, "module", model)
    coef = getattr(getattr(inner, "config", None), "moe_aux_coef", 0.0)
    balance = balance_loss(inner) if coef else None
    return (ce if balance is None else ce + coef * balance), ce


def clip_grad_norm_(model, max_norm):
    """torch.nn.utils.clip_grad_norm_ over the whole model of the job: the replicated gradients
    (equal on every rank after DDP) count once, the expert slices of every rank together.
    Returns the total norm (the same on every rank)."""
    experts = {id(p) for p in expert_parameters(model).values()}
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    device = grads[0].device if grads else torch.device("cpu")
    squares = torch.zeros(2, dtype=torch.float32, device=device)     # (replicated, experts)
    for p in model.parameters():
        if p.grad is not None:
            squares[int(id(p) in experts)] += p.grad.float().square().sum()
    if experts:
        dist.all_reduce(squares[1:])
    total = squares.sum().sqrt()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def _sharded_view(state, experts, mesh):
    """Expert entries of a state dict as DTensors sharded on dim 0 over `mesh`, so that the
    checkpoint records each slice's place in the whole (E, ...) tensor."""
    return {name: DTensor.from_local(value, mesh, [Shard(0)], run_check=False)
            if name in experts else value for name, value in state.items()}


def _checkpoint_state(model, optimizer):
    experts = expert_parameters(model)
    mesh = None
    if experts:
        group = next(m for m in model.modules() if isinstance(m, ExpertParallelMoE)).group
        device = next(iter(experts.values())).device.type
        mesh = DeviceMesh.from_group(group or dist.group.WORLD, device)
    state = {"model": _sharded_view(model.state_dict(), experts, mesh)}
    if optimizer is not None:
        optim = get_optimizer_state_dict(model, optimizer)
        optim["state"] = {name: _sharded_view(entry, {"exp_avg", "exp_avg_sq"}, mesh)
                          if name in experts else entry
                          for name, entry in optim["state"].items()}
        state["optim"] = optim
    return state


def save_checkpoint(path, model, optimizer=None):
    """torch.distributed.checkpoint save of the model (not a DDP wrapper) and optimizer into the
    directory `path`: every rank writes its own expert slices, replicated tensors once. Call on
    every rank. Loads at any world size (load_checkpoint), with or without expert parallelism."""
    dcp.save(_checkpoint_state(model, optimizer), checkpoint_id=path)


def load_checkpoint(path, model, optimizer=None):
    """Fill `model` (and `optimizer`) in place from save_checkpoint's directory, whatever the world
    size and expert layout it was saved with: each rank reads the parts of the whole tensors it
    holds. Call on every rank (or in a single process without torch.distributed)."""
    state = _checkpoint_state(model, optimizer)
    dcp.load(state, checkpoint_id=path)
    model.load_state_dict(_local_view(state["model"]))
    if optimizer is not None:
        optim = state["optim"]
        optim["state"] = {name: _local_view(entry) for name, entry in optim["state"].items()}
        set_optimizer_state_dict(model, optimizer, optim)


def _local_view(state):
    return {name: value.to_local() if isinstance(value, DTensor) else value
            for name, value in state.items()}
