"""Checkpoints of a torchrun job through torch.distributed.checkpoint: every rank writes its own
expert slices (as DTensor shards of the whole (E, ...) tensors), replicated tensors once; they
load at any world size, with or without expert parallelism, or in one process."""
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard

from gptcore.nn import MoE
from gptcore.parallel.experts import expert_parameters

DCP_DIR = "dcp"      # torch.distributed.checkpoint's files inside a training output directory


def _sharded_view(state, experts, mesh):
    """Expert entries of a state dict as DTensors sharded on dim 0 over `mesh`, so that the
    checkpoint records each slice's place in the whole (E, ...) tensor."""
    return {name: DTensor.from_local(value, mesh, [Shard(0)], run_check=False)
            if name in experts else value for name, value in state.items()}


def _checkpoint_state(model, optimizer):
    experts = expert_parameters(model)
    mesh = None
    if experts:
        group = next(m.dispatch.group for m in model.modules()
                     if isinstance(m, MoE) and m.dispatch is not None)
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
    directory `path`. Call on every rank. Loads at any world size (load_checkpoint)."""
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
