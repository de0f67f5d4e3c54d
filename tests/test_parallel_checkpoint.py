"""Checkpoints of a torchrun job (2 gloo processes, experts split between them): a SIGTERM that
reaches one rank stops both at the same step with one checkpoint, time-triggered saves happen
at the same step on both, and the resumed job ends bit-identical to an uninterrupted one."""
import json
import os
import signal

import torch

from process_group import spawn
from gptcore import GPT, GPTConfig, parallel
from gptcore.training import checkpoint, stop
from gptcore.training.data import Batches, CharTokenizer, encode_documents, load_names
from gptcore.training.config import TrainConfig
from gptcore.training.objective import Objective, next_token
from gptcore.training.train import train

CONFIG = dict(n_layer=1, d_model=16, n_head=2, d_ff=24, block_size=16)
STEPS = 6


def _fit(rank, world, out, loss_fn=next_token, **config):
    torch.manual_seed(0)
    model = parallel.data_parallel(GPT(GPTConfig.preset("names-moe", **CONFIG)),
                                   experts_parallel=True)
    seqs = encode_documents(load_names()[:200], CharTokenizer.names(), CONFIG["block_size"])
    train(model, Batches(seqs, 4, rank=rank, world_size=world),
          TrainConfig(steps=STEPS, lr=1e-2, **config), objective=Objective(loss_fn),
          context=parallel.Context(rank, world), out_dir=out, progress=False)
    return model.module


def _job(rank, world, root):
    straight = _fit(rank, world, f"{root}/straight")
    calls = []

    def signalled(model, batch):
        calls.append(1)
        if rank == 1 and len(calls) == 2:           # only rank 1 is told to stop
            os.kill(os.getpid(), signal.SIGTERM)
        return next_token(model, batch)
    try:
        with stop.requests():
            _fit(rank, world, f"{root}/stopped", loss_fn=signalled)
        raise AssertionError("the job did not stop")
    except stop.Interrupted as err:
        assert err.step == 2, err.step                  # both ranks, the same step
    resumed = _fit(rank, world, f"{root}/stopped", checkpoint_minutes=1e-9, keep=None)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"rank {rank}: {name}"


def test_stop_resume_and_timed_saves_under_torch_distributed(tmp_path):
    spawn(2, _job, str(tmp_path))
    steps = [json.loads((c / "state.json").read_text())["step"]
             for c in checkpoint.checkpoints(tmp_path / "stopped")]
    assert steps == [2, 3, 4, 5, 6]                # the stop, then one per step by time
    for found in checkpoint.checkpoints(tmp_path / "stopped"):
        assert (found / parallel.DCP_DIR / ".metadata").is_file()
