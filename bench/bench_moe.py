"""MoE layer (router + top-k + experts): gptcore.moe on CPU against Hugging Face transformers'
MixtralSparseMoeBlock ("eager" and "grouped_mm" experts) on the same weights and inputs.

Napkin math: SwiGLU experts do 2*T*k*3*H*I FLOPs. Weight bytes read are k_hit experts *
3*H*I * bytes/weight (T=1: k experts; MXFP4 is 17/32 byte/weight). H1024 I2816 E8 top-2 fp32
reads 69 MB per decode step: 2.3 ms at 30 GB/s. GB/s in the note counts those weight bytes."""
import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

import gptcore
from harness import Row, main, time_fn

MIXTRAL = dict(H=1024, I=2816, E=8, k=2)
GPT_OSS = dict(H=1024, I=1024, E=32, k=4)
TOKENS = {"quick": [1, 16, 128], "full": [1, 4, 16, 128, 512, 4096]}


class Layer:
    """One set of weights, as gptcore arguments and as the two Hugging Face peers."""

    def __init__(self, H, I, E, k, dtype=torch.float32, gpt_oss=False):
        g = torch.Generator().manual_seed(0)
        self.H, self.I, self.E, self.k, self.gpt_oss = H, I, E, k, gpt_oss
        self.router = (torch.randn(E, H, generator=g) / H**0.5).to(dtype)
        self.gate_up = (torch.randn(E, 2 * I, H, generator=g) / H**0.5).to(dtype)
        self.down = (torch.randn(E, H, I, generator=g) / I**0.5).to(dtype)
        self.kwargs = {}
        if gpt_oss:
            self.kwargs = dict(scoring="topk_softmax", activation="gpt_oss",
                               gate_up_bias=torch.randn(E, 2 * I, generator=g).to(dtype) / 10,
                               down_bias=torch.randn(E, H, generator=g).to(dtype) / 10)
        self.peers = {}
        for impl in ("eager", "grouped_mm"):
            cfg = MixtralConfig(hidden_size=H, intermediate_size=I, num_local_experts=E,
                                num_experts_per_tok=k)
            cfg._experts_implementation = impl
            block = MixtralSparseMoeBlock(cfg).to(dtype)
            with torch.no_grad():
                block.gate.weight.copy_(self.router)
                block.experts.gate_up_proj.copy_(self.gate_up)
                block.experts.down_proj.copy_(self.down)
            self.peers[impl] = block

    def ours(self, x, gate_up=None, down=None):
        return gptcore.moe(x, self.router, self.gate_up if gate_up is None else gate_up,
                           self.down if down is None else down, self.k, **self.kwargs)[0]

    def flops(self, T):
        return 2 * T * self.k * 3 * self.H * self.I

    def weight_bytes(self, T, bytes_per_weight):
        hit = min(self.E, T * self.k)
        return hit * 3 * self.H * self.I * bytes_per_weight


def repeats(T):
    """Small calls are cheap and the most exposed to other jobs on the CPU: repeat them more."""
    return 20 if T <= 16 else 5 if T <= 512 else 3


def best_peer(layer, x):
    """(seconds, name) of the faster Hugging Face peer, forward only."""
    times = {}
    for name, block in layer.peers.items():
        with torch.no_grad():
            times[name] = time_fn(lambda: block(x[None]), repeat=repeats(len(x)))
    name = min(times, key=times.get)
    return times[name], f"hf-{name}"


def forward_rows(layer, tokens, dtype, label):
    rows = []
    bpw = torch.finfo(dtype).bits // 8
    for T in tokens:
        x = torch.randn(T, layer.H).to(dtype)
        with torch.no_grad():
            ours = time_fn(lambda: layer.ours(x), repeat=repeats(T))
        peer, name = best_peer(layer, x)
        gbs = layer.weight_bytes(T, bpw) / ours / 1e9
        rows.append(Row("moe", f"{label} T={T}", ours, peer, name, flops=layer.flops(T),
                        note=f"{gbs:.1f} GB/s weights"))
    return rows


def decode_row(layer):
    """T=1: weight bytes actually read per second, against the copy roof."""
    x = torch.randn(1, layer.H)
    with torch.no_grad():
        ours = time_fn(lambda: layer.ours(x), repeat=20)
    peer, name = best_peer(layer, x)
    return Row("moe", "decode T=1 fp32 weight bytes", ours, peer, name,
               bytes=layer.weight_bytes(1, 4))


def mxfp4_rows(layer, tokens):
    rows = []
    gu4, dn4 = gptcore.mxfp4_quantize(layer.gate_up), gptcore.mxfp4_quantize(layer.down)
    for T in tokens:
        x = torch.randn(T, layer.H)
        with torch.no_grad():
            ref32 = layer.ours(x)
            err = ((layer.ours(x, gu4, dn4) - ref32).norm() / ref32.norm()).item()
            ours = time_fn(lambda: layer.ours(x, gu4, dn4), repeat=repeats(T))
        peer, name = best_peer(layer, x)
        gbs = layer.weight_bytes(T, 17 / 32) / ours / 1e9
        rows.append(Row("moe", f"mxfp4 T={T} (vs fp32 peer)", ours, peer, name,
                        flops=layer.flops(T),
                        note=f"{gbs:.1f} GB/s weights, rel. err vs fp32 {err:.3f}"))
    return rows


def backward_row(layer, T):
    x = torch.randn(T, layer.H)
    params = [torch.nn.Parameter(t.clone()) for t in (layer.router, layer.gate_up, layer.down)]

    def ours():
        xr = x.detach().requires_grad_()
        gptcore.moe(xr, *params, layer.k)[0].sum().backward()

    t_ours = time_fn(ours, repeat=3)
    block = layer.peers["eager"]
    xr = x.detach().requires_grad_()
    peer = time_fn(lambda: block(xr[None]).sum().backward(), repeat=3)
    return Row("moe", f"fwd+bwd T={T} fp32", t_ours, peer, "hf-eager",
               flops=3 * layer.flops(T))


def run(quick=False):
    tokens = TOKENS["quick" if quick else "full"]
    torch.manual_seed(0)
    mixtral = Layer(**MIXTRAL)
    rows = forward_rows(mixtral, tokens, torch.float32, "fp32 H1024 I2816 E8 k2")
    rows.append(decode_row(mixtral))
    rows += mxfp4_rows(mixtral, [1] if quick else [1, 16])
    rows.append(backward_row(mixtral, 64 if quick else 512))
    bf16 = Layer(**MIXTRAL, dtype=torch.bfloat16)
    rows += forward_rows(bf16, [16] if quick else [16, 128, 512], torch.bfloat16,
                         "bf16 H1024 I2816 E8 k2")
    gpt_oss = Layer(**GPT_OSS, gpt_oss=True)
    rows += forward_rows(gpt_oss, [1, 16] if quick else [1, 16, 128, 512], torch.float32,
                         "fp32 gpt_oss H1024 I1024 E32 k4")
    return rows


def test_moe_forward(benchmark):
    layer = Layer(H=256, I=512, E=8, k=2)
    x = torch.randn(16, 256)
    with torch.no_grad():
        benchmark(layer.ours, x)


if __name__ == "__main__":
    main(run, __doc__)
