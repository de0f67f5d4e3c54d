"""Runs a test body in `world` spawned processes joined by gloo over a FileStore (no network but
the loopback), one thread each: the machine has 2 cores and runs other work beside the tests."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank, world, store_path, body, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank,
                            world_size=world)
    try:
        body(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(world, body, *args):
    """Calls body(rank, world, *args) in each process; a failure in any re-raises here with the
    child's traceback. `body` must be a module-level function (spawn pickles it by name)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_entry, args=(world, os.path.join(tmp, "store"), body, args), nprocs=world,
                 join=True)
