"""TrainConfig: everything about how a model is trained, in one dataclass (a preset's recipe,
with the command line's overrides on top): the optimiser, the schedule, the length of the
run, validation and checkpoint cadence. gptcore.training.train reads it."""
from dataclasses import dataclass, field

SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000               # optimizer steps (the upper bound under a time budget)
    batch_size: int = 64            # documents per micro-batch (of the whole job under torchrun)
    grad_accum: int = 1             # micro-batches per optimizer step (gradients summed, as nanoGPT)
    lr: float = 3e-3                # peak learning rate
    schedule: str = "cosine"        # decay after warm-up: "cosine", "linear" or "constant"
    warmup: int = 0                 # linear warm-up steps
    min_lr_ratio: float = 0.0       # the decay ends at lr * min_lr_ratio
    betas: tuple = (0.9, 0.95)      # AdamW betas
    eps: float = 1e-8               # AdamW epsilon
    weight_decay: float = 0.0       # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0          # clip the global gradient norm; 0 = off
    lr_scales: dict = field(default_factory=dict)  # {parameter name prefix: lr factor}
    packed: bool = True             # packed sequences (cu_seqlens) rather than padded rows
    time_budget: float | None = None  # seconds; the schedule then decays by elapsed time
    eval_every: int = 250           # steps between validation passes (and one at the end)
    checkpoint_every: int | None = None     # also checkpoint every N steps
    checkpoint_minutes: float | None = None  # and after every M minutes of wall time
    keep: int | None = 2            # checkpoints kept (the newest); None: all
    seed: int = 0                   # torch and random seeds at the start of the run
    threads: int = 1                # torch threads: toy models lose to thread overhead

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        for name in ("lr", "time_budget", "checkpoint_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(f"warmup, grad_clip, weight_decay: expected >= 0, got "
                             f"{self.warmup}, {self.grad_clip}, {self.weight_decay}")
        for name in ("checkpoint_every", "keep"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected a positive int or None, got {value!r}")
