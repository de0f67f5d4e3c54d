"""What a training run optimises and how it is validated, as a plug-in of gptcore.training.train:
an Objective gives the mean loss of a batch, the number of units (tokens, sequences, pairs) that
mean is over, the validation loss, and what the run's summary adds at the end. NextToken is the GPT's; gptcore.diffusion.train has
the masked-diffusion one; Objective(loss_fn, eval_fn) wraps any loss function. The MoE balance
loss is not the objective's: the run's context adds it (gptcore.training.context)."""
import torch


def count_tokens(batch):
    """Tokens that carry a loss in `batch` (targets != -1), else every input token."""
    targets = batch.get("targets") if isinstance(batch, dict) else None
    if targets is not None:
        return int((targets != -1).sum())
    first = batch["idx"] if isinstance(batch, dict) else batch
    return first.numel()


class Objective:
    """loss_fn(model, batch) -> scalar mean loss; eval_fn(model) -> validation loss (float) or
    None; units(batch): what the mean is over (default: count_tokens)."""

    def __init__(self, loss_fn, eval_fn=None):
        self.loss_fn, self.eval_fn = loss_fn, eval_fn

    def loss(self, model, batch):
        return self.loss_fn(model, batch)

    def units(self, batch):
        return count_tokens(batch)

    def evaluate(self, model):
        return None if self.eval_fn is None else float(self.eval_fn(model))

    def report(self, model):
        """Figures the summary adds once training ends (a dict)."""
        return {}


def next_token(model, batch):
    """The GPT's mean next-token cross-entropy over batch {"idx", "targets"} (and, packed,
    "cu_seqlens", "max_seqlen")."""
    return model(batch["idx"], batch["targets"], cu_seqlens=batch.get("cu_seqlens"),
                 max_seqlen=batch.get("max_seqlen"))[1]


@torch.no_grad()
def evaluate(model, batches, loss_fn=next_token):
    """Token-weighted mean of loss_fn (default: next_token) over batches, in eval mode."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        n = count_tokens(batch)
        total += float(loss_fn(model, batch)) * n
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


class NextToken(Objective):
    """Autoregressive language modelling: next_token on the training batches, its token-weighted
    mean over `val_batches` (a list of batches; None: no validation)."""

    def __init__(self, val_batches=None):
        super().__init__(next_token)
        self.val_batches = val_batches

    def evaluate(self, model):
        return None if self.val_batches is None else evaluate(model, self.val_batches)
