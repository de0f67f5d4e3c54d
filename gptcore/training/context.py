"""The single-process context of gptcore.training.train: the hooks through which the loop
combines losses, reads the clock, clips, agrees to stop and checkpoints, as plain local
operations. gptcore.parallel.Context is the same interface for one process of a torchrun job,
so the loop has one path for both."""
import torch

from gptcore.training import checkpoint


def aux_loss(model):
    """The model's auxiliary training loss (a GPT's MoE load balancing), or None."""
    aux = getattr(checkpoint.unwrap(model), "aux_loss", None)
    return None if aux is None else aux()


class Local:
    """One process, no torch.distributed."""
    rank, world_size, logging = 0, 1, True

    def loss(self, model, objective, batch):
        """(loss to optimise: the objective plus the model's auxiliary loss, loss to log)."""
        term = objective.loss(model, batch)
        aux = aux_loss(model)
        return (term if aux is None else term + aux), term

    def step_stats(self, loss, tokens):
        return loss, tokens

    def agree(self, seconds):
        return seconds

    def any(self, flag):
        return bool(flag)

    def clip_grad_norm_(self, model, max_norm):
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)

    def summary(self, model):
        inner = checkpoint.unwrap(model)
        if hasattr(inner, "num_params"):
            return {"total_params": inner.num_params(),
                    "active_params": inner.num_params(active=True)}
        total = sum(p.numel() for p in inner.parameters())
        return {"total_params": total, "active_params": total}

    def save(self, out_dir, model, optimizer, state, meta, keep=2):
        return checkpoint.save(out_dir, model, optimizer, meta=meta, state=state, keep=keep)

    def load(self, ckpt_dir, model, optimizer):
        state = checkpoint.load_state(ckpt_dir, optimizer)
        checkpoint.load_weights(model, ckpt_dir)
        return state

