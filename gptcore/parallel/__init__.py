"""Scaling out on torch.distributed: expert parallelism for gptcore.nn.MoE (experts.py), the
torchrun job's training context, DDP and distributed losses (job.py), and checkpoints that
load at any world size (dcp.py)."""
from gptcore.parallel.dcp import DCP_DIR, load_checkpoint, save_checkpoint
from gptcore.parallel.experts import (SHARDED, ExpertParallel, all_to_all, expert_parallel,
                                      expert_parameters)
from gptcore.parallel.job import (Context, balance_loss, clip_grad_norm_, data_parallel,
                                  init_from_env, next_token_loss, per_rank)

__all__ = ["DCP_DIR", "SHARDED", "Context", "ExpertParallel", "all_to_all", "balance_loss",
           "clip_grad_norm_", "data_parallel", "expert_parallel", "expert_parameters",
           "init_from_env", "load_checkpoint", "next_token_loss", "per_rank", "save_checkpoint"]
