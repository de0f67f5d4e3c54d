"""Expert parallelism's token exchange (gptcore.parallel): time of the all-to-all that carries the
tokens to their experts and back, against the expert compute those tokens buy, in 2 and 4 gloo
processes of one thread each on this machine.

Napkin math (per rank, per MoE layer): the forward sends T*k token rows of H values out and
gets as many back (2 directions), and the backward repeats both for the gradients:
4*T*k*H*bytes per training step, of which the (W-1)/W that go to other ranks cross the wire.
Expert compute for them is 2*T*k*3*H*I FLOPs forward (SwiGLU), 3x that for forward+backward.
So exchange/compute ~ bytes*(W-1)/W / (6*I) per FLOP: it does not depend on T, and wider
experts (larger I) hide the exchange better. docs/parallel.md works it out for a real cluster."""
import json
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gptcore
from gptcore import parallel
from gptcore.nn import MoE
from harness import Row, main, time_fn

LAYER = dict(d_model=1024, d_ff=1024, n_experts=8, top_k=2)
TOKENS = {"quick": [128], "full": [128, 512]}


def _measure(rank, world, store, tokens, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    H, k = LAYER["d_model"], LAYER["top_k"]
    layer = parallel.expert_parallel(MoE(**LAYER))
    E_local = layer.dispatch.n_local
    results = []
    for T in tokens:
        x = torch.randn(T, H)
        with torch.no_grad():
            _, indices = gptcore.route(layer.router(x), k)
        sent = torch.bincount(indices.reshape(-1), minlength=LAYER["n_experts"])
        received_counts = torch.empty_like(sent)
        dist.all_to_all_single(received_counts, sent)
        send = sent.view(world, E_local).sum(1).tolist()
        recv = received_counts.view(world, E_local).sum(1).tolist()
        rows = x.repeat_interleave(k, dim=0)                              # (T*k, H)

        def exchange():
            # there and back, as one forward does: the barrier keeps ranks in step
            dist.barrier()
            back = parallel.all_to_all(rows, recv, send)
            parallel.all_to_all(back, send, recv)

        received = parallel.all_to_all(rows, recv, send)
        experts = torch.arange(E_local).repeat(world).repeat_interleave(received_counts)
        ones = torch.ones(len(experts), 1)

        def compute():
            dist.barrier()
            gptcore.moe_experts(received, experts[:, None], ones, layer.gate_up_proj,
                                layer.down_proj)

        with torch.no_grad():
            t_exchange, t_compute = [], []
            for _ in range(3):    # interleaved, so both see the same load from other jobs
                t_exchange.append(time_fn(exchange, warmup=1, repeat=3))
                t_compute.append(time_fn(compute, warmup=1, repeat=3))
        off_rank = (sum(send) - send[rank]) + (sum(recv) - recv[rank])
        results.append(dict(T=T, exchange=min(t_exchange), compute=min(t_compute),
                            bytes=2 * T * k * H * 4, off_rank_bytes=off_rank * H * 4,
                            flops=2 * len(experts) * 3 * H * LAYER["d_ff"]))
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


def measure(world, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        mp.spawn(_measure, args=(world, os.path.join(tmp, "store"), tokens, out), nprocs=world)
        with open(out) as f:
            return json.load(f)


def run(quick=False):
    rows = []
    H, I, E, k = (LAYER[n] for n in ("d_model", "d_ff", "n_experts", "top_k"))
    for world in (2, 4):
        for r in measure(world, TOKENS["quick" if quick else "full"]):
            step_mb = 2 * r["bytes"] / 2**20       # forward and backward
            rows.append(Row("all_to_all", f"W={world} T={r['T']}/rank H{H} I{I} E{E} k{k}",
                            r["exchange"], r["compute"], "expert compute", bytes=r["bytes"],
                            note=f"{step_mb:.1f} MiB/layer/step/rank, "
                                 f"{r['off_rank_bytes'] / r['bytes']:.0%} off-rank; "
                                 f"experts {r['flops'] / r['compute'] / 1e9:.1f} GFLOP/s"))
    return rows


def test_all_to_all_roundtrip(benchmark):
    """pytest-benchmark entry: one 2-process measurement of the smallest case."""
    benchmark.pedantic(measure, args=(2, [128]), rounds=1, iterations=1)


if __name__ == "__main__":
    main(run, __doc__)
