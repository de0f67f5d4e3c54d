"""Child of tests/test_concurrency.py: runs the ops in this process on all threads, then in two
DataLoader workers started by fork (one thread each, as DataLoader sets), and prints
"same bits" when every worker's outputs equal the parent's."""
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_concurrency import workload  # noqa: E402


class Outputs(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, seed):
        return workload(seed)


if __name__ == "__main__":
    parent = [workload(seed) for seed in range(4)]       # OpenMP's pool exists before the fork
    loader = DataLoader(Outputs(), batch_size=None, num_workers=2,
                        multiprocessing_context="fork", timeout=240)
    for seed, outputs in enumerate(loader):
        for i, (got, want) in enumerate(zip(outputs, parent[seed])):
            if not torch.equal(got, want):
                sys.exit(f"seed {seed}, output {i}: the worker's bits differ from the parent's")
    print("same bits")
