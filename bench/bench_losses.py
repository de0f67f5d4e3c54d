"""The LM head with its loss: gptcore.linear_cross_entropy (chunked over tokens, gradients in the
same pass) against the plain composition it replaces, F.linear + F.cross_entropy, forward and
backward on the same inputs, interleaved; and the peak memory of each, measured in a fresh
process as the growth of its resident set over one forward + backward (the inputs and their
gradients' first allocation included for both). At vocab 32k (Llama-like head: 2 x 512 tokens,
width 1024) the plain path holds (tokens, V) fp32 logits, their log-softmax and gradient; at
nanoGPT's vocab 65 the logits are small and the row is about call overhead.

The row's GFLOP/s: the head's three GEMMs (forward, dx, dweight), 6 N d V FLOPs."""
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

import gptcore
from harness import Row, main, time_interleaved

# (tokens, width, vocab)
SHAPES = {"quick": [(768, 128, 65), (1024, 1024, 32000)],
          "full": [(768, 128, 65), (1024, 1024, 32000), (4096, 1024, 32000)]}


def inputs(N, d, V):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g).requires_grad_()
    w = torch.randn(V, d, generator=g).div_(d ** 0.5).requires_grad_()   # no temporary: it
    # would raise the process's peak before the step and hide the step's own
    return x, w, torch.randint(0, V, (N,), generator=g)


def step(which, x, w, target):
    if which == "ours":
        loss = gptcore.linear_cross_entropy(x, w, target)
    else:
        loss = F.cross_entropy(F.linear(x, w), target)
    loss.backward()


def peak_bytes(which, N, d, V):
    """Resident-set growth (bytes) of one forward + backward in a fresh process."""
    code = (f"import resource, torch, bench_losses as b; torch.set_num_threads(1); "
            f"x, w, t = b.inputs({N}, {d}, {V}); "
            f"base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"b.step({which!r}, x, w, t); "
            f"print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return int(out.stdout.split()[-1])


def case(N, d, V):
    x, w, target = inputs(N, d, V)
    best = time_interleaved({"ours": lambda: step("ours", x, w, target),
                             "peer": lambda: step("peer", x, w, target)}, repeat=10)
    ours_mem, peer_mem = peak_bytes("ours", N, d, V), peak_bytes("peer", N, d, V)
    return Row("linear_cross_entropy", f"fwd+bwd N{N} d{d} V{V} fp32", best["ours"], best["peer"],
               "F.linear+F.cross_entropy", flops=6 * N * d * V,
               note=f"peak MB ours {ours_mem / 2**20:.0f} vs {peer_mem / 2**20:.0f}",
               extra={"peak_bytes_ours": ours_mem, "peak_bytes_peer": peer_mem})


def run(quick=False):
    return [case(*shape) for shape in SHAPES["quick" if quick else "full"]]


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
