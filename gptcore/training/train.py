"""gptcore.training.train: one training loop for every gptcore model. It owns the optimizer (AdamW),
the learning-rate schedule (warm-up, then cosine or linear decay, by steps or by a time
budget), gradient clipping, validation, checkpoints (safetensors + JSON, resumable), the
progress bar, the loss-curve PNG and the summary. The caller gives the model, the data, a
TrainConfig, the objective (gptcore.training.objective: the loss and the validation) and,
in a torchrun job, the context (gptcore.parallel.Context; default: one process)."""
import json
import math
import random
import signal
import time
from pathlib import Path

import torch

from gptcore.ops import available_backends
from gptcore.ops.backend import current as current_backend
from gptcore.training import checkpoint, rng, stop
from gptcore.training.config import TrainConfig
from gptcore.training.context import Local
from gptcore.training.objective import NextToken, count_tokens


def lr_factor(progress, step, warmup, schedule, min_lr_ratio):
    """Multiplier of the peak learning rate: linear warm-up over `warmup` steps, then
    "cosine" or "linear" decay to min_lr_ratio as progress goes 0 -> 1, or "constant"."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        decay = 1.0 - progress
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def backend_name(device):
    """The backend the gptcore ops run on for tensors on `device`."""
    name = current_backend()
    if name != "auto":
        return name
    available = available_backends()
    native = "triton" if torch.device(device).type == "cuda" else "cpp"
    return native if available[native] else "ref"


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model, lr, betas, eps, weight_decay, lr_scales=None):
    """AdamW; weight decay only on matrices (not on norms' gains, biases, sinks). fused=True:
    one kernel for all parameters (measured on microgpt: see docs/model.md). lr_scales
    {parameter name prefix: factor}: those parameters learn at lr * factor (first match wins;
    the factor is kept in the group as "lr_scale")."""
    lr_scales = lr_scales or {}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def scale_of(name):
        return next((f for prefix, f in lr_scales.items() if name.startswith(prefix)), 1.0)

    groups = []
    for scale in dict.fromkeys([scale_of(n) for n, _ in named] or [1.0]):
        mine = [p for n, p in named if scale_of(n) == scale]
        groups += [{"params": [p for p in mine if p.dim() >= 2], "weight_decay": weight_decay,
                    "lr_scale": scale, "lr": lr * scale},
                   {"params": [p for p in mine if p.dim() < 2], "weight_decay": 0.0,
                    "lr_scale": scale, "lr": lr * scale}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def train(model, batches, config=TrainConfig(), *, objective=None, context=None, out_dir=None,
          resume=True, meta=None, name="", progress=True, clock=time.perf_counter):
    """Trains `model` as `config` says and returns a summary dict.

    batches: a callable i -> batch (deterministic in i: resumes see the same data; step s
    reads i = s * config.grad_accum + micro-batch) or an iterable of batches. objective: a gptcore.training.objective.Objective (default NextToken
    without validation); its evaluate(model) runs every config.eval_every steps and at the end.
    context: gptcore.parallel.Context in a torchrun job (losses and tokens are the job's,
    clipping sees every rank's experts, checkpoints go through torch.distributed.checkpoint);
    default gptcore.training.context.Local, one process.
    out_dir: the run directory (gptcore.training.checkpoint): checkpoints every
    config.checkpoint_every steps, every config.checkpoint_minutes minutes of wall time and at
    the end (the newest config.keep kept), loss.png, summary.json. With resume=True a run
    continues from its newest checkpoint exactly (weights, optimizer, step, history, seconds,
    RNG states; the data come from `batches(step)`), and refuses one whose model config or meta
    differ. Inside gptcore.training.stop.requests() (gptcore train), SIGTERM/SIGINT with
    out_dir: a checkpoint after the current step, then stop.Interrupted.
    clock: what seconds and the time budget count; time.process_time measures this
    process's CPU time, a fair stand-in for an idle machine on a shared one (1 thread).
    Summary: steps, seconds, tokens, tokens_per_s, train_loss (mean of the last 10% of steps),
    val_loss, total_params, active_params, backend, lr (and world_size in a job), and what
    objective.report(model) adds."""
    c = config
    objective = objective or NextToken()
    context = context or Local()
    get_batch = batches if callable(batches) else (lambda step, it=iter(batches): next(it))
    device = next(checkpoint.unwrap(model).parameters()).device
    seed_everything(c.seed)
    optimizer = make_optimizer(model, c.lr, c.betas, c.eps, c.weight_decay, c.lr_scales)
    # val_seconds: the run's seconds when each validation loss was known (time to a target loss)
    history = {"train_steps": [], "train_losses": [], "val_steps": [], "val_losses": [],
               "val_seconds": []}
    start_step, elapsed_before, tokens = 0, 0.0, 0
    if out_dir is not None and resume and checkpoint.checkpoints(out_dir):
        checkpoint.check_compatible(out_dir, model, meta)
        state = context.load(checkpoint.resolve(out_dir, "out_dir"), model, optimizer)
        start_step, history = state["step"], state["history"]
        history.setdefault("val_seconds", [None] * len(history["val_steps"]))  # older runs
        elapsed_before, tokens = state["seconds"], state["tokens"]
        rng.set_state(state["rng"])

    def save(step, seconds):
        """Writes a checkpoint of the state after `step` (every rank calls it); its directory."""
        if out_dir is None:
            return None
        state = {"step": step, "history": history, "seconds": seconds, "tokens": tokens,
                 "rng": rng.get_state()}
        return context.save(out_dir, model, optimizer, state, meta, c.keep)

    def evaluate():
        loss = objective.evaluate(model)
        return None if loss is None else float(loss)

    bar = None
    if progress and context.logging:
        from tqdm import tqdm
        bar = tqdm(total=c.steps, initial=start_step, desc=name or "train", unit="step",
                   mininterval=0.5, dynamic_ncols=True)
    model.train()
    t0 = clock()
    step = saved_step = start_step
    stopping = False
    saved_at = time.monotonic()          # checkpoint_minutes count wall time: what a crash loses
    while step < c.steps:
        elapsed = elapsed_before + clock() - t0
        if c.time_budget is not None:
            elapsed = context.agree(elapsed)
            if elapsed >= c.time_budget:
                break
        progress_frac = step / c.steps
        if c.time_budget is not None:
            progress_frac = max(progress_frac, elapsed / c.time_budget)
        factor = lr_factor(progress_frac, step, c.warmup, c.schedule, c.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = c.lr * factor * group.get("lr_scale", 1.0)
        optimizer.zero_grad(set_to_none=True)
        logged_sum, step_units = 0.0, 0
        for micro in range(c.grad_accum):      # the step's mean loss over its micro-batches
            batch = get_batch(step * c.grad_accum + micro)
            loss, logged = context.loss(model, objective, batch)
            (loss / c.grad_accum).backward()
            logged_sum += logged.item()
            step_units += count_tokens(batch)
        if c.grad_clip:
            context.clip_grad_norm_(model, c.grad_clip)
        optimizer.step()
        step += 1
        loss_value, step_tokens = context.step_stats(logged_sum / c.grad_accum, step_units)
        tokens += step_tokens
        history["train_steps"].append(step)
        history["train_losses"].append(loss_value)
        if step % min(c.eval_every, c.steps) == 0 and step < c.steps:
            val = evaluate()
            if val is not None:
                history["val_steps"].append(step)
                history["val_losses"].append(val)
                history["val_seconds"].append(elapsed_before + clock() - t0)
        if bar is not None:
            bar.update(1)
            if step % 50 == 0 or step == c.steps:
                seconds = elapsed_before + clock() - t0
                if c.time_budget is not None:    # the ETA of a timed run: steps that fit
                    bar.total = min(c.steps, max(step, int(step * c.time_budget
                                                           / max(seconds, 1e-9))))
                bar.set_postfix(loss=f"{history['train_losses'][-1]:.3f}",
                                tok_s=f"{tokens / max(seconds, 1e-9):,.0f}", refresh=False)
        # the periodic checkpoint (not at the last step: the final one follows at once)
        due = bool(c.checkpoint_every) and step % c.checkpoint_every == 0
        if c.checkpoint_minutes:
            due = due or context.any(time.monotonic() - saved_at >= 60 * c.checkpoint_minutes)
        if due and step < c.steps:
            save(step, elapsed_before + clock() - t0)
            saved_step, saved_at = step, time.monotonic()
        stopping = out_dir is not None and context.any(stop.requested() is not None)
        if stopping:
            break
    seconds = elapsed_before + clock() - t0
    if bar is not None:
        bar.close()
    if stopping:
        path = save(step, seconds) if saved_step != step else checkpoint.checkpoints(out_dir)[-1]
        raise stop.Interrupted(stop.requested() or signal.SIGTERM, step, path)
    val_loss = evaluate()
    if val_loss is not None and (not history["val_steps"] or history["val_steps"][-1] != step):
        history["val_steps"].append(step)
        history["val_losses"].append(val_loss)
        history["val_seconds"].append(elapsed_before + clock() - t0)
    save(step, seconds)
    losses = history["train_losses"]
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    summary = {"steps": step, "seconds": round(seconds, 3), "tokens": tokens,
               "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
               "train_loss": round(sum(tail) / len(tail), 4) if tail else None,
               "val_loss": None if val_loss is None else round(val_loss, 4),
               **context.summary(model), "backend": backend_name(device), "lr": c.lr,
               **objective.report(checkpoint.unwrap(model))}
    if out_dir is not None and context.logging:
        checkpoint.plot_losses(Path(out_dir) / "loss.png", history["train_steps"], losses,
                               history["val_steps"], history["val_losses"], title=name)
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
