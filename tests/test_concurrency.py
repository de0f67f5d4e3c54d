"""Concurrent calls return the same bits as serial ones: several Python threads at once, calls
inside torch.set_num_threads(1), and DataLoader worker processes started by fork (run in a
child process with a timeout, so a fork that deadlocks in OpenMP fails instead of hanging)."""
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import gptcore

BACKENDS = ["ref", "cpp"]


def workload(seed):
    """Forward outputs of each op on small fixed inputs: decode and prefill attention (the C++
    forward splits the keys of decode across pieces), varlen, routing and experts."""
    g = torch.Generator().manual_seed(seed)
    q1, k1 = torch.randn(1, 4, 1, 32, generator=g), torch.randn(1, 2, 3000, 32, generator=g)
    q2, k2 = torch.randn(2, 4, 70, 16, generator=g), torch.randn(2, 2, 70, 16, generator=g)
    packed, cu = torch.randn(50, 2, 8, generator=g), torch.tensor([0, 0, 20, 50], dtype=torch.int32)
    logits, x = torch.randn(40, 6, generator=g), torch.randn(40, 16, generator=g)
    gate_up, down = torch.randn(6, 24, 16, generator=g), torch.randn(6, 16, 12, generator=g)
    weights, indices = gptcore.route(logits, 2)
    return [gptcore.attention(q1, k1, k1, sinks=torch.zeros(4)),
            gptcore.attention(q2, k2, k2, causal=True, window=9),
            gptcore.attention_varlen(packed, packed, packed, cu, cu, 30, 30, causal=True),
            weights, indices, gptcore.moe_experts(x, indices, weights, gate_up, down)]


def gradients(seed):
    """Gradients of attention and the experts (the C++ backward at one thread count)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 4, 40, 16, generator=g, requires_grad=True)
    k = torch.randn(1, 2, 40, 16, generator=g, requires_grad=True)
    x = torch.randn(30, 16, generator=g, requires_grad=True)
    gate_up = torch.randn(4, 24, 16, generator=g, requires_grad=True)
    down = torch.randn(4, 16, 12, generator=g)
    weights, indices = gptcore.route(torch.randn(30, 4, generator=g), 2)
    loss = gptcore.attention(q, k, k, causal=True).square().sum() + \
        gptcore.moe_experts(x, indices, weights, gate_up, down).square().sum()
    return list(torch.autograd.grad(loss, [q, k, x, gate_up]))


def same_bits(got, want):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {i} differs: max |diff| {(a - b).abs().max().item()}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_at_once_match_serial_calls(backend):
    with gptcore.backend(backend):
        serial = [workload(seed) + gradients(seed) for seed in range(4)]
    results, errors = [None] * 4, []

    def work(seed):
        try:
            with gptcore.backend(backend):       # the backend choice is per thread's stack
                results[seed] = workload(seed) + gradients(seed)
        except Exception as err:                 # surfaced below: a thread cannot fail a test
            errors.append(err)
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, serial):
        same_bits(got, want)


# The C++ kernels only: the reference is torch's own matmul, whose blocking (and so its last
# bits) follows the thread count (measured: moe_experts differs by 1.5e-5 at 1 vs 2 threads).
@pytest.mark.parametrize("backend", ["cpp"])
def test_one_thread_matches_all_threads(backend):
    with gptcore.backend(backend):
        want = workload(0)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            got = workload(0)
        finally:
            torch.set_num_threads(before)
    same_bits(got, want)


def test_dataloader_fork_workers_match_the_parent():
    """Forked workers (after the parent ran the ops on all its threads) return the same bits."""
    child = subprocess.run([sys.executable, str(Path(__file__).with_name("dataloader_fork.py"))],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0 and child.stdout.strip().endswith("same bits"), (
        f"exit {child.returncode}\n{child.stdout[-1000:]}\n{child.stderr[-2000:]}")
