"""linear_cross_entropy_fwd / _bwd for the Triton backend (CUDA tensors), written with torch's
own GEMMs and row ops over chunks of tokens, as csrc/loss/linear_cross_entropy_cpu.cpp does on
the CPU: one chunk's fp32 logits at a time, dx and dweight computed in the forward pass. No
Triton kernel: the GEMMs are cuBLAS's, and the row ops are a few passes over one chunk."""
import torch

from gptcore.ops.spec import define

CHUNK_BYTES = 16 << 20     # fp32 logits per chunk (128 rows at a 32k vocabulary)


def forward(x, weight, target, ignore_index, z_loss, with_grad):
    N, d = x.shape
    V = weight.shape[0]
    xf, wf = x.float(), weight.float()
    kept = target != ignore_index                                            # (N,)
    kept_scaled = kept.float() / kept.sum().clamp(min=1)                    # (N,)
    safe_target = torch.where(kept, target, 0)[:, None]                     # (N, 1)
    dx = x.new_empty(N, d, dtype=torch.float32) if with_grad else x.new_empty(0)
    dweight = torch.zeros_like(wf) if with_grad else weight.new_empty(0)
    loss = x.new_zeros((), dtype=torch.float32)
    chunk = min(max(CHUNK_BYTES // (4 * max(V, 1)), 1), max(N, 1))
    for start in range(0, N, chunk):
        rows = slice(start, start + chunk)
        logits = xf[rows] @ wf.t()                                           # (rows, V)
        picked = logits.gather(1, safe_target[rows])[:, 0]                   # (rows,)
        row_max = logits.amax(1)                                             # (rows,)
        e = logits.sub_(row_max[:, None]).exp_()                             # one exp pass
        total = e.sum(1)
        lse = total.log() + row_max                                          # (rows,)
        loss += (lse - picked + z_loss * lse * lse) @ kept_scaled[rows]
        if with_grad:
            g = e.mul_((kept_scaled[rows] / total * (1 + 2 * z_loss * lse))[:, None])
            g.scatter_add_(1, safe_target[rows], -kept_scaled[rows][:, None])
            torch.mm(g, wf, out=dx[rows])                                    # (rows, d)
            dweight.addmm_(g.t(), xf[rows])                                  # (V, d)
    if with_grad:
        return loss, dx.to(x.dtype), dweight.to(weight.dtype)
    return loss, dx, dweight


def backward(dloss, x, weight, target, ignore_index, z_loss, dx, dweight):
    s = dloss.float()
    return (dx.float() * s).to(x.dtype), (dweight.float() * s).to(weight.dtype)


define("triton_", {"linear_cross_entropy_fwd": forward, "linear_cross_entropy_bwd": backward},
       dispatch_keys=("CUDA", "CPU"))
