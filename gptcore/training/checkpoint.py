"""Checkpoints as safetensors plus JSON: model.safetensors, optimizer.safetensors, config.json
(the model's GPTConfig and any metadata, e.g. the tokenizer) and state.json (step, history)."""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def unwrap(model):
    """The model inside a DistributedDataParallel (or similar `.module`) wrapper."""
    return getattr(model, "module", model)


def _optimizer_tensors(optimizer):
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, s in state["state"].items():
        for key, value in s.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save(out_dir, model, optimizer=None, state=None, meta=None):
    """Writes the checkpoint files into out_dir (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    # tied weights are one tensor: save_file wants each storage once, so drop aliases
    weights, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            weights[name] = t.detach().contiguous()
    save_file(weights, out / "model.safetensors")
    config = getattr(model, "config", None)
    payload = {"model_class": type(model).__name__,
               "config": config.to_dict() if hasattr(config, "to_dict") else None,
               "meta": meta or {}}
    (out / "config.json").write_text(json.dumps(payload, indent=2))
    if optimizer is not None:
        tensors, rest = _optimizer_tensors(optimizer)
        save_file(tensors, out / "optimizer.safetensors")
        state = {**(state or {}), "optimizer": rest}
    if state is not None:
        (out / "state.json").write_text(json.dumps(state))


def load_weights(model, out_dir):
    """Loads model.safetensors into `model` (tied weights restored through their alias), or the
    torch.distributed.checkpoint shards a torchrun job wrote (gptcore.parallel), at any world size."""
    from gptcore import parallel
    if not (Path(out_dir) / "model.safetensors").exists() and \
            (Path(out_dir) / parallel.DCP_DIR).is_dir():
        parallel.load_checkpoint(Path(out_dir) / parallel.DCP_DIR, unwrap(model))
        return
    weights = load_file(Path(out_dir) / "model.safetensors")
    missing, unexpected = unwrap(model).load_state_dict(weights, strict=False)
    tied = {n for n, _ in unwrap(model).named_parameters(remove_duplicate=False)} - \
        {n for n, _ in unwrap(model).named_parameters()}
    if set(missing) - tied or unexpected:
        raise ValueError(f"out_dir: checkpoint does not match the model (missing {missing}, "
                         f"unexpected {unexpected})")


def load_state(out_dir, optimizer=None):
    """state.json as a dict (None if absent); restores the optimizer's state if given."""
    path = Path(out_dir) / "state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if optimizer is not None and "optimizer" in state:
        tensors = load_file(Path(out_dir) / "optimizer.safetensors")
        rest = state["optimizer"]
        per_param = {}
        for key, value in list(tensors.items()) + list(rest["scalars"].items()):
            pid, name = key.split(".", 1)
            per_param.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": rest["param_groups"]})
    return state


def load_model(out_dir, device=None):
    """(GPT, meta) from a checkpoint directory written by gptcore.training.train for a GPT."""
    from gptcore.model.config import GPTConfig
    from gptcore.model import GPT
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"ckpt: expected a checkpoint directory with config.json, got "
                         f"{str(out_dir)!r}")
    payload = json.loads(path.read_text())
    model = GPT(GPTConfig.from_dict(payload["config"]))
    load_weights(model, out_dir)
    return model.to(device) if device is not None else model, payload["meta"]


def plot_losses(path, train_steps, train_losses, val_steps, val_losses, title=""):
    """Loss curves (train smoothed over a window, raw in light grey; validation as points) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(train_steps, train_losses, color="0.8", linewidth=0.6, label="train (per step)")
    window = max(1, len(train_losses) // 50)
    if len(train_losses) >= window:
        kernel = torch.ones(window) / window
        smooth = torch.nn.functional.conv1d(torch.tensor(train_losses)[None, None],
                                            kernel[None, None]).flatten().tolist()
        ax.plot(train_steps[window - 1:], smooth, color="C0", label=f"train (mean of {window})")
    if val_losses:
        ax.plot(val_steps, val_losses, "o-", color="C1", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
