"""Checkpoints of a training run. A run directory (`gptcore train --out DIR`) holds
checkpoints/step-NNNNNNNN/, one per save, each written atomically (gptcore.training.atomic) with
model.safetensors, optimizer.safetensors, config.json (the model's class and config, and
metadata such as the tokenizer), state.json (step, history, seconds, tokens, RNG states) and
manifest.json (each file's size and sha256); the newest `keep` are kept. The run directory
also holds loss.png and summary.json. Readers take a run directory (its newest checkpoint) or
one checkpoint directory, and verify the manifest first."""
import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes, save as save_bytes

from gptcore.training import atomic

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"step-(\d+)(?:-(\d+))?")       # step-00000120, or step-00000120-2 on a re-save


class WriteError(OSError):
    """A checkpoint could not be written (disk full, read-only directory): the previous one is
    intact."""


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


def config_payload(model, meta=None):
    """What config.json holds: {"model_class", "config", "meta"}."""
    model = unwrap(model)
    config = getattr(model, "config", None)
    return {"model_class": type(model).__name__,
            "config": config.to_dict() if hasattr(config, "to_dict") else None,
            "meta": meta or {}}


def checkpoints(out_dir):
    """The complete checkpoint directories of a run directory, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match[1]), int(match[2] or 1), path))
    return [path for *_, path in sorted(found)]


def begin(out_dir, step):
    """(staging directory, final directory) for a checkpoint of `step` in run directory
    out_dir; what interrupted saves left behind is removed first."""
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    atomic.clean(root)
    # the same step saved again (a finished run run again): a higher suffix, so it sorts newer
    taken = [int(m[2] or 1) for m in map(_NAME.fullmatch, (p.name for p in root.iterdir()))
             if m and int(m[1]) == step]
    name = f"step-{step:08d}" + (f"-{max(taken) + 1}" if taken else "")
    return atomic.stage(root, name), root / name


def finish(out_dir, tmp, target, keep):
    """Commits a staged checkpoint, then deletes all but the newest `keep`."""
    atomic.commit(tmp, target)
    for old in checkpoints(out_dir)[:-keep] if keep else []:
        atomic.remove(old)


def save(out_dir, model, optimizer=None, state=None, meta=None, keep=2):
    """Writes a checkpoint of `model` (and optimizer, state) into run directory out_dir
    atomically; returns its directory. Raises WriteError, the older checkpoints intact, when
    the disk is full or the directory is not writable."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep: expected None or >= 1, got {keep}")
    state = dict(state or {})
    model = unwrap(model)
    # tied weights are one tensor: safetensors wants each storage once, so drop aliases
    weights, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            weights[name] = t.detach().contiguous()
    files = {"model.safetensors": save_bytes(weights),
             "config.json": json.dumps(config_payload(model, meta), indent=2).encode()}
    if optimizer is not None:
        tensors, rest = _optimizer_tensors(optimizer)
        files["optimizer.safetensors"] = save_bytes(tensors)
        state["optimizer"] = rest
    files["state.json"] = json.dumps(state).encode()
    tmp = None
    try:
        tmp, target = begin(out_dir, state.get("step", 0))
        for name, data in files.items():
            atomic.write_file(tmp / name, data)
        finish(out_dir, tmp, target, keep)
    except OSError as err:
        raise write_error(out_dir, tmp, err) from None
    return target


def write_error(out_dir, tmp, err):
    """The WriteError for a failed save, after removing its staging directory."""
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    previous = checkpoints(out_dir)
    kept = f"the previous checkpoint {previous[-1]} is intact" if previous else \
        "no earlier checkpoint exists"
    return WriteError(f"could not write a checkpoint into {out_dir}: "
                      f"{err.strerror or err} ({kept})")


def resolve(path, argument="ckpt"):
    """The checkpoint directory `path` names, verified: `path` itself when it is one, else the
    newest checkpoint of the run directory `path`. ValueError (naming `argument`) when there is
    none; atomic.DamagedError naming the file when a file does not match the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{argument}: expected a checkpoint directory, got {str(path)!r}, "
                         f"which {'is not a directory' if path.exists() else 'does not exist'}")
    if (path / atomic.MANIFEST).exists():
        found = path
    elif checkpoints(path):
        found = checkpoints(path)[-1]
    elif (path / CHECKPOINTS).is_dir():
        raise ValueError(f"{argument}: expected a complete checkpoint in {str(path)!r}, got only "
                         f"an unfinished one (the run stopped before its first save completed)")
    else:
        raise ValueError(f"{argument}: expected a checkpoint directory written by gptcore train "
                         f"(with {CHECKPOINTS}/ or {atomic.MANIFEST}), got {str(path)!r}")
    try:
        atomic.verify(found)
    except atomic.DamagedError as err:
        raise atomic.DamagedError(f"{argument}: expected a complete, intact checkpoint, got "
                                  f"{err}") from None
    return found


def read_config(ckpt_dir):
    """config.json of a (verified) checkpoint directory."""
    return json.loads((Path(ckpt_dir) / "config.json").read_text())


def check_compatible(out_dir, model, meta, argument="out_dir"):
    """Refuses (ValueError naming the first differing field) to continue the run in out_dir
    with a model or data whose config differs from its newest checkpoint's."""
    found = checkpoints(out_dir)
    if not found:
        return
    theirs, ours = read_config(found[-1]), json.loads(json.dumps(config_payload(model, meta)))
    for field, a, b in _differences(theirs, ours):
        raise ValueError(f"{argument}: expected a run directory with this run's "
                         f"{field}={_short(b)}, got {field}={_short(a)} in {out_dir} (choose "
                         f"another directory or the same settings)")


def _differences(a, b, prefix=""):
    """(dotted field, value in a, value in b) where two JSON values differ, depth first."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            yield from _differences(a.get(key), b.get(key), f"{prefix}{'.' if prefix else ''}{key}")
    elif a != b:
        yield prefix or "config", a, b


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_weights(model, ckpt_dir):
    """Loads a checkpoint directory's model.safetensors into `model` (tied weights restored
    through their alias), or the torch.distributed.checkpoint shards a torchrun job wrote
    (gptcore.parallel), at any world size."""
    from gptcore import parallel
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "model.safetensors").exists() and (ckpt_dir / parallel.DCP_DIR).is_dir():
        parallel.load_checkpoint(ckpt_dir / parallel.DCP_DIR, unwrap(model))
        return
    weights = load_bytes((ckpt_dir / "model.safetensors").read_bytes())
    missing, unexpected = unwrap(model).load_state_dict(weights, strict=False)
    tied = {n for n, _ in unwrap(model).named_parameters(remove_duplicate=False)} - \
        {n for n, _ in unwrap(model).named_parameters()}
    if set(missing) - tied or unexpected:
        raise ValueError(f"ckpt: checkpoint does not match the model (missing {missing}, "
                         f"unexpected {unexpected})")


def load_state(ckpt_dir, optimizer=None):
    """state.json of a checkpoint directory as a dict; restores the optimizer's state if given."""
    state = json.loads((Path(ckpt_dir) / "state.json").read_text())
    if optimizer is not None and "optimizer" in state:
        tensors = load_bytes((Path(ckpt_dir) / "optimizer.safetensors").read_bytes())
        rest = state["optimizer"]
        per_param = {}
        for key, value in list(tensors.items()) + list(rest["scalars"].items()):
            pid, name = key.split(".", 1)
            per_param.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": rest["param_groups"]})
    return state


def load_model(path, device=None, argument="ckpt"):
    """(GPT, meta) from a run directory (its newest checkpoint) or a checkpoint directory
    written by gptcore.training.train for a GPT; verified against its manifest first."""
    from gptcore.model.config import GPTConfig
    from gptcore.model import GPT
    ckpt_dir = resolve(path, argument)
    payload = read_config(ckpt_dir)
    if payload.get("model_class") != "GPT":
        raise ValueError(f"{argument}: expected a checkpoint of a GPT, got one of "
                         f"{payload.get('model_class')!r} in {str(ckpt_dir)!r}")
    model = GPT(GPTConfig.from_dict(payload["config"]))
    load_weights(model, ckpt_dir)
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
