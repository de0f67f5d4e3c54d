"""Rotary embeddings: gptcore.rotary (q and k in one op) against the plain PyTorch composition
it replaces (Hugging Face's apply_rotary_pos_emb: q * cos + rotate_half(q) * sin, the same for
k), on the same inputs, interleaved: a Llama training step's forward and backward at 2 x 512
tokens, and one decode token. q and k come as views of one fused projection, as in gptcore.GPT.
Memory-bound: forward reads q, k and writes them rotated, backward reads and writes their
gradients, so 4 tensors of q's and k's size move per fwd+bwd, 2 per forward."""
import torch

import gptcore
from harness import Row, main, time_interleaved

# (B, S, Hq, Hk, D): the Llama config of bench_models.py (16 heads, 4 kv heads, D 64)
TRAIN = {"quick": (1, 128, 16, 4, 64), "full": (2, 512, 16, 4, 64)}
DECODE = (1, 1, 16, 4, 64)


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _inputs(B, S, Hq, Hk, D, dtype, grad):
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(B, S, (Hq + Hk) * D, generator=g).to(dtype).requires_grad_(grad)
    q, k = qk.split((Hq * D, Hk * D), dim=-1)
    angles = torch.arange(S)[:, None] * 10000.0 ** (-torch.arange(0, D, 2) / D)
    angles = torch.cat((angles, angles), dim=-1)                      # (S, D)
    return qk, q.view(B, S, Hq, D), k.view(B, S, Hk, D), angles.cos(), angles.sin()


def _peer(q, k, cos, sin):
    """Hugging Face's composition, on (B, H, S, D) views as its attention modules hold them."""
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    c, s = cos.to(q.dtype), sin.to(q.dtype)
    return q * c + _rotate_half(q) * s, k * c + _rotate_half(k) * s


def train_case(shape, dtype):
    qk, q, k, cos, sin = _inputs(*shape, dtype, grad=True)
    dq, dk = torch.randn_like(q), torch.randn_like(k)

    def ours():
        yq, yk = gptcore.rotary(q, k, cos=cos, sin=sin)
        torch.autograd.backward([yq, yk], [dq, dk])

    def peer():
        yq, yk = _peer(q, k, cos, sin)
        torch.autograd.backward([yq, yk], [dq.transpose(1, 2), dk.transpose(1, 2)])

    best = time_interleaved({"ours": ours, "peer": peer}, repeat=10)
    tag = "bf16" if dtype == torch.bfloat16 else "fp32"
    B, S, Hq, Hk, D = shape
    return Row("rotary", f"fwd+bwd B{B} S{S} H{Hq}/{Hk} D{D} {tag}", best["ours"], best["peer"],
               "HF rotate_half", bytes=4 * (q.numel() + k.numel()) * q.element_size(), dtype=tag)


def decode_case(dtype):
    _, q, k, cos, sin = _inputs(*DECODE, dtype, grad=False)
    best = time_interleaved({"ours": lambda: gptcore.rotary(q, k, cos=cos, sin=sin),
                             "peer": lambda: _peer(q, k, cos, sin)}, repeat=50)
    tag = "bf16" if dtype == torch.bfloat16 else "fp32"
    B, S, Hq, Hk, D = DECODE
    return Row("rotary", f"decode B{B} S{S} H{Hq}/{Hk} D{D} {tag}", best["ours"], best["peer"],
               "HF rotate_half", bytes=2 * (q.numel() + k.numel()) * q.element_size(), dtype=tag,
               note="one token: per-call overhead")


def run(quick=False):
    shape = TRAIN["quick" if quick else "full"]
    return [f(dtype) for dtype in (torch.float32, torch.bfloat16)
            for f in (lambda d: train_case(shape, d), decode_case)]


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
