"""Where and how `gptcore train` computes: the device (cpu, cuda, or auto), bf16 autocast over
fp32 master weights, and torch.compile of the loss (forward and, through AOTAutograd, the
backward), all as wrappers of the objective's loss function so the training loop stays as
it is (validation runs in fp32, uncompiled)."""
import torch

DTYPES = ("fp32", "bf16")


def resolve_device(name, argument="--device"):
    """torch.device for "auto" (cuda when available, else cpu), "cpu" or "cuda"."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{argument}: expected a device this machine has, got 'cuda' "
                         f"(torch sees no CUDA device)")
    return torch.device(name)


def wrap(loss_fn, device, dtype="fp32", compile=False):
    """loss_fn(model, batch) run under bf16 autocast on `device` (weights, optimizer state and
    the residual stream stay fp32; matmuls and attention run in bf16) and/or compiled.
    The backward runs outside the autocast region, as autocast wants."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    if compile:
        loss_fn = torch.compile(loss_fn)
    if dtype == "fp32":
        return loss_fn
    compute = loss_fn

    def autocast_loss(model, batch):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            return compute(model, batch)
    return autocast_loss
