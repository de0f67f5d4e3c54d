"""gptcore.training.train: one training loop for every gptcore model. It owns the optimizer (AdamW),
the learning-rate schedule (warm-up, then cosine or linear decay, by steps or by a time
budget), gradient clipping, validation, checkpoints (safetensors + JSON, resumable), the
progress bar, the loss-curve PNG and the summary; the caller owns the model, the data and,
optionally, the loss."""
import json
import math
import random
import signal
import time
from pathlib import Path

import torch

from gptcore.training import checkpoint, rng, stop
from gptcore.ops import available_backends
from gptcore.ops.backend import current as current_backend


def next_token_loss(model, batch):
    """The default loss: (the GPT's mean next-token cross-entropy plus its MoE auxiliary loss,
    the cross-entropy alone), so the loop optimises the first and logs the second.
    batch: {"idx", "targets"} and, packed, "cu_seqlens", "max_seqlen"."""
    _, loss = model(batch["idx"], batch["targets"], cu_seqlens=batch.get("cu_seqlens"),
                    max_seqlen=batch.get("max_seqlen"))
    aux = getattr(checkpoint.unwrap(model), "aux_loss", None)
    return (loss + aux() if aux is not None else loss), loss


def count_tokens(batch):
    """Tokens that carry a loss in `batch` (targets != -1), else every input token."""
    targets = batch.get("targets") if isinstance(batch, dict) else None
    if targets is not None:
        return int((targets != -1).sum())
    first = batch["idx"] if isinstance(batch, dict) else batch
    return first.numel()


@torch.no_grad()
def evaluate(model, batches, loss_fn=None):
    """Token-weighted mean of loss_fn (default: the plain next-token loss, no aux) over batches."""
    loss_fn = loss_fn or (lambda m, b: m(b["idx"], b["targets"], cu_seqlens=b.get("cu_seqlens"),
                                         max_seqlen=b.get("max_seqlen"))[1])
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        n = count_tokens(batch)
        total += float(loss_fn(model, batch)) * n
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


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


def train(model, batches, *, steps, loss_fn=None, lr=3e-3, warmup=0, schedule="cosine",
          min_lr_ratio=0.0, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, grad_clip=1.0,
          time_budget=None, eval_fn=None, eval_every=None, out_dir=None, resume=True,
          checkpoint_every=None, checkpoint_minutes=None, keep=2, seed=0, is_main=True,
          progress=True, meta=None, name="", clock=time.perf_counter, parallel=None,
          lr_scales=None):
    """Trains `model` and returns a summary dict.

    batches: a callable step -> batch (deterministic in step: resumes see the same data) or an
    iterable of batches. loss_fn(model, batch) -> scalar, or (scalar to optimise, scalar to
    log) (default next_token_loss).
    time_budget (seconds): stop when it is spent; the schedule then decays by elapsed time.
    lr_scales {parameter name prefix: factor}: per-group learning rates (see make_optimizer).
    eval_fn(model) -> float validation loss, run every eval_every steps and at the end.
    out_dir: the run directory (gptcore.training.checkpoint): checkpoints every
    checkpoint_every steps, every checkpoint_minutes minutes of wall time and at the end (the
    newest `keep` kept), loss.png, summary.json. With resume=True a run continues from its
    newest checkpoint exactly (weights, optimizer, step, history, seconds, RNG states; the data
    come from `batches(step)`), and refuses one whose model config or meta differ.
    Inside gptcore.training.stop.requests() (gptcore train), SIGTERM/SIGINT with out_dir: a
    checkpoint after the current step, then stop.Interrupted.
    is_main=False (other ranks of a data-parallel run): no bar, no files.
    clock: what seconds and the time budget count; time.process_time measures this
    process's CPU time, a fair stand-in for an idle machine on a shared one (1 thread).
    parallel: a gptcore.parallel.Context in a torchrun job: losses and tokens are the job's,
    clipping sees every rank's experts, checkpoints go through torch.distributed.checkpoint.
    Summary: steps, seconds, tokens, tokens_per_s, train_loss (mean of the last 10% of steps),
    val_loss, total_params, active_params, backend, lr."""
    loss_fn = loss_fn or next_token_loss
    get_batch = batches if callable(batches) else iter(batches).__next__
    inner = checkpoint.unwrap(model)
    device = next(inner.parameters()).device
    seed_everything(seed)
    optimizer = make_optimizer(model, lr, betas, eps, weight_decay, lr_scales)
    history = {"train_steps": [], "train_losses": [], "val_steps": [], "val_losses": []}
    start_step, elapsed_before, tokens = 0, 0.0, 0
    if out_dir is not None and resume and checkpoint.checkpoints(out_dir):
        checkpoint.check_compatible(out_dir, model, meta)
        found = checkpoint.resolve(out_dir, "out_dir")
        if parallel is not None:
            state = parallel.load(found, model, optimizer)
        else:
            state = checkpoint.load_state(found, optimizer)
            checkpoint.load_weights(model, found)
        start_step, history = state["step"], state["history"]
        elapsed_before, tokens = state["seconds"], state["tokens"]
        rng.set_state(state["rng"])

    def save(step, seconds):
        """Writes a checkpoint of the state after `step` (every rank calls it); its directory."""
        if out_dir is None or (parallel is None and not is_main):
            return None
        state = {"step": step, "history": history, "seconds": seconds, "tokens": tokens,
                 "rng": rng.get_state()}
        if parallel is not None:
            return parallel.save(out_dir, model, optimizer, state={
                **state, "world_size": parallel.world_size}, meta=meta, keep=keep)
        return checkpoint.save(out_dir, model, optimizer, meta=meta, state=state, keep=keep)

    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start_step, desc=name or "train", unit="step",
                   mininterval=0.5, dynamic_ncols=True)
    model.train()
    t0 = clock()
    step = saved_step = start_step
    stopping = False
    saved_at = time.monotonic()          # checkpoint_minutes count wall time: what a crash loses
    while step < steps:
        elapsed = elapsed_before + clock() - t0
        if time_budget is not None and parallel is not None:
            elapsed = parallel.agree(elapsed)
        if time_budget is not None and elapsed >= time_budget:
            break
        progress_frac = step / steps
        if time_budget is not None:
            progress_frac = max(progress_frac, elapsed / time_budget)
        factor = lr_factor(progress_frac, step, warmup, schedule, min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * factor * group.get("lr_scale", 1.0)
        batch = get_batch(step)
        loss = loss_fn(model, batch)
        loss, logged = loss if isinstance(loss, tuple) else (loss, loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip and parallel is not None:
            parallel.clip_grad_norm_(model, grad_clip)
        elif grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        optimizer.step()
        step += 1
        loss_value, step_tokens = logged.item(), count_tokens(batch)
        if parallel is not None:
            loss_value, step_tokens = parallel.step_stats(loss_value, step_tokens)
        tokens += step_tokens
        history["train_steps"].append(step)
        history["train_losses"].append(loss_value)
        if eval_fn is not None and eval_every and step % eval_every == 0 and step < steps:
            history["val_steps"].append(step)
            history["val_losses"].append(float(eval_fn(model)))
        if bar is not None:
            bar.update(1)
            if step % 50 == 0 or step == steps:
                seconds = elapsed_before + clock() - t0
                if time_budget is not None:      # the ETA of a timed run: steps that fit
                    bar.total = min(steps, max(step, int(step * time_budget / max(seconds, 1e-9))))
                bar.set_postfix(loss=f"{history['train_losses'][-1]:.3f}",
                                tok_s=f"{tokens / max(seconds, 1e-9):,.0f}", refresh=False)
        # the periodic checkpoint (not at the last step: the final one follows at once)
        due = bool(checkpoint_every) and step % checkpoint_every == 0
        if checkpoint_minutes:
            late = time.monotonic() - saved_at >= 60 * checkpoint_minutes
            due = due or (parallel.any(late) if parallel is not None else late)
        if due and step < steps:
            save(step, elapsed_before + clock() - t0)
            saved_step, saved_at = step, time.monotonic()
        stopping = out_dir is not None and stop.requested() is not None
        if out_dir is not None and parallel is not None:
            stopping = parallel.any(stopping)
        if stopping:
            break
    seconds = elapsed_before + clock() - t0
    if bar is not None:
        bar.close()
    if stopping:
        path = save(step, seconds) if saved_step != step else checkpoint.checkpoints(out_dir)[-1]
        raise stop.Interrupted(stop.requested() or signal.SIGTERM, step, path)
    val_loss = None
    if eval_fn is not None:
        val_loss = float(eval_fn(model))
        if not history["val_steps"] or history["val_steps"][-1] != step:
            history["val_steps"].append(step)
            history["val_losses"].append(val_loss)
    save(step, seconds)
    losses = history["train_losses"]
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    summary = {"steps": step, "seconds": round(seconds, 3), "tokens": tokens,
               "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
               "train_loss": round(sum(tail) / len(tail), 4) if tail else None,
               "val_loss": None if val_loss is None else round(val_loss, 4),
               "total_params": inner.num_params() if hasattr(inner, "num_params") else
               sum(p.numel() for p in inner.parameters()),
               "active_params": inner.num_params(active=True) if hasattr(inner, "num_params")
               else sum(p.numel() for p in inner.parameters()),
               "backend": backend_name(device), "lr": lr}
    if parallel is not None:
        summary.update(total_params=parallel.num_params(model),
                       active_params=parallel.num_params(model, active=True),
                       world_size=parallel.world_size)
    if out_dir is not None and is_main:
        checkpoint.plot_losses(Path(out_dir) / "loss.png", history["train_steps"], losses,
                               history["val_steps"], history["val_losses"], title=name)
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
