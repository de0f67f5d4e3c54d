"""Masked diffusion (LLaDA): the algorithm (llada.py), a diffusion GPT on documents (train.py)
and its commands (cli.py)."""
from gptcore.diffusion.llada import (MASK_EPS, diffusion_generate, diffusion_loss, forward_mask,
                                     llada_loss, nll_bound, nll_bound_samples, transfer_schedule)

__all__ = ["MASK_EPS", "diffusion_generate", "diffusion_loss", "forward_mask", "llada_loss",
           "nll_bound", "nll_bound_samples", "transfer_schedule"]
