"""One process of a torchrun job, for gptcore.training.train: the Context whose hooks make the
loop's losses, clock, clipping, stop requests and checkpoints the job's (process group from the
environment, DDP that leaves expert parameters alone, torch.distributed.checkpoint saves that
load at any world size). gptcore.training.context.Local is the single-process twin."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gptcore.nn import MoE
from gptcore.parallel.dcp import DCP_DIR, load_checkpoint, save_checkpoint
from gptcore.parallel.experts import expert_parallel, expert_parameters
from gptcore.training import atomic, checkpoint
from gptcore.training.objective import NextToken


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

    def loss(self, model, objective, batch):
        """(this rank's term of the global batch's loss to optimise, the same without the MoE
        balance loss, to log): the objective's mean weighted by this rank's share of the units
        it averages over (they fall unevenly between ranks), and the load-balancing loss of the
        global batch (balance_loss), so that DDP's average of the terms is what one process
        computes on the global batch."""
        term = objective.loss(model, batch)
        local = objective.units(batch)
        term = term * (local * self.world_size / _job_total(local, term.device).clamp(min=1))
        inner = checkpoint.unwrap(model)
        coef = getattr(getattr(inner, "config", None), "moe_aux_coef", 0.0)
        balance = balance_loss(inner) if coef else None
        return (term if balance is None else term + coef * balance), term

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

    def any(self, flag):
        """True on every rank when `flag` is true on any (a stop request must stop all ranks
        at the same step)."""
        value = torch.tensor([float(flag)], dtype=torch.float64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def clip_grad_norm_(self, model, max_norm):
        return clip_grad_norm_(checkpoint.unwrap(model), max_norm)

    def num_params(self, model, active=False):
        """GPT.num_params of the whole job's model: every rank's experts counted."""
        model = checkpoint.unwrap(model)
        return model.num_params(active=active) + sum(
            m.dispatch.remote_params(m) for m in model.modules()
            if isinstance(m, MoE) and m.dispatch is not None)

    def summary(self, model):
        """What a run's summary adds for the job."""
        return {"total_params": self.num_params(model),
                "active_params": self.num_params(model, active=True),
                "world_size": self.world_size}

    def save(self, out_dir, model, optimizer, state, meta, keep=2):
        """A checkpoint in gptcore.training.checkpoint's layout, written atomically: every rank
        writes its shards into the staging directory rank 0 chose (under dcp/), then rank 0
        adds config.json and state.json and commits it. Returns its directory."""
        model = checkpoint.unwrap(model)
        state = {**state, "world_size": self.world_size}
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
        load_checkpoint(ckpt_dir / DCP_DIR, checkpoint.unwrap(model), optimizer)
        return json.loads((ckpt_dir / "state.json").read_text())


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
    """gptcore.training.train.next_token_loss for one rank of a data-parallel job: (optimised,
    logged) terms whose average over the ranks (DDP's) is what one process computes on the
    global batch (Context.loss with the next-token objective)."""
    ctx = Context(dist.get_rank(), dist.get_world_size())
    return ctx.loss(model, NextToken(), batch)


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
