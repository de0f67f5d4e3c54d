"""MoE layer (router + top-k + experts): gptcore.moe on CPU against Hugging Face transformers'
MixtralSparseMoeBlock ("eager" and "grouped_mm" experts) on the same weights and inputs; gpt-oss
experts against transformers' GptOssExperts (both implementations) on the same routing; MXFP4
experts against the fp32 peer and against dequantising to bf16 once + the HF bf16 block. Ours
and the peers run alternately (harness.time_interleaved).

Napkin math: SwiGLU experts do 2*T*k*3*H*I FLOPs. Weight bytes read are k_hit experts *
3*H*I * bytes/weight (T=1: k experts; MXFP4 is 17/32 byte/weight). H1024 I2816 E8 top-2 fp32
reads 69 MB per decode step: 2.3 ms at 30 GB/s. GB/s in the note counts those weight bytes."""
import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

import gptcore
from transformers import GptOssConfig
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

from harness import Row, main, time_interleaved

MIXTRAL = dict(H=1024, I=2816, E=8, k=2)
GPT_OSS = dict(H=1024, I=1024, E=32, k=4)
TOKENS = {"quick": [1, 16, 128], "full": [1, 4, 16, 128, 512, 4096]}


class Layer:
    """One set of weights, as gptcore arguments and as the two Hugging Face peers."""

    def __init__(self, H, I, E, k, dtype=torch.float32):
        g = torch.Generator().manual_seed(0)
        self.H, self.I, self.E, self.k = H, I, E, k
        self.router = (torch.randn(E, H, generator=g) / H**0.5).to(dtype)
        self.gate_up = (torch.randn(E, 2 * I, H, generator=g) / H**0.5).to(dtype)
        self.down = (torch.randn(E, H, I, generator=g) / I**0.5).to(dtype)
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
                           self.down if down is None else down, self.k)[0]

    def flops(self, T):
        return 2 * T * self.k * 3 * self.H * self.I

    def weight_bytes(self, T, bytes_per_weight):
        hit = min(self.E, T * self.k)
        return hit * 3 * self.H * self.I * bytes_per_weight


def repeats(T):
    """Small calls are cheap and the most exposed to other jobs on the CPU: repeat them more."""
    return 20 if T <= 16 else 5 if T <= 512 else 3


def against_peers(ours, peers, T):
    """(our seconds, best peer seconds, its name): ours and every peer {name: fn} interleaved."""
    with torch.no_grad():
        times = time_interleaved({"ours": ours, **peers}, repeat=repeats(T))
    name = min(peers, key=times.get)
    return times["ours"], times[name], name


def hf_peers(layer, x, dtype=None):
    """The Hugging Face blocks on x (cast to `dtype` first when given: outside the timing)."""
    xp = x if dtype is None else x.to(dtype)
    return {f"hf-{name}": (lambda b=block: b(xp[None])) for name, block in layer.peers.items()}


def forward_rows(layer, tokens, dtype, label):
    rows = []
    bpw = torch.finfo(dtype).bits // 8
    for T in tokens:
        x = torch.randn(T, layer.H).to(dtype)
        ours, peer, name = against_peers(lambda: layer.ours(x), hf_peers(layer, x), T)
        gbs = layer.weight_bytes(T, bpw) / ours / 1e9
        rows.append(Row("moe", f"{label} T={T}", ours, peer, name, flops=layer.flops(T),
                        note=f"{gbs:.1f} GB/s weights",
                        dtype="bf16" if dtype == torch.bfloat16 else "fp32"))
    return rows


def decode_row(layer):
    """T=1: weight bytes actually read per second, against the read roof."""
    x = torch.randn(1, layer.H)
    ours, peer, name = against_peers(lambda: layer.ours(x), hf_peers(layer, x), 1)
    return Row("moe", "decode T=1 fp32 weight bytes", ours, peer, name,
               bytes=layer.weight_bytes(1, 4), stream="read")


def mxfp4_rows(layer, tokens):
    """MXFP4 experts against the fp32 HF block, and against what a user does today: the MXFP4
    weights dequantised to bf16 once (outside the timing), then the HF bf16 block on bf16 x."""
    rows = []
    gu4, dn4 = gptcore.mxfp4_quantize(layer.gate_up), gptcore.mxfp4_quantize(layer.down)
    bf16 = Layer(layer.H, layer.I, layer.E, layer.k, dtype=torch.bfloat16)
    with torch.no_grad():
        for block in bf16.peers.values():
            block.gate.weight.copy_(layer.router)
            block.experts.gate_up_proj.copy_(gptcore.mxfp4_dequantize(gu4, torch.bfloat16))
            block.experts.down_proj.copy_(gptcore.mxfp4_dequantize(dn4, torch.bfloat16))
    for T in tokens:
        x = torch.randn(T, layer.H)
        with torch.no_grad():
            ref32 = layer.ours(x)
            err = ((layer.ours(x, gu4, dn4) - ref32).norm() / ref32.norm()).item()
        for peers, what in ((hf_peers(layer, x), "fp32 peer"),
                            (hf_peers(bf16, x, torch.bfloat16), "dequantised bf16 peer")):
            ours, peer, name = against_peers(lambda: layer.ours(x, gu4, dn4), peers, T)
            gbs = layer.weight_bytes(T, 17 / 32) / ours / 1e9
            rows.append(Row("moe", f"mxfp4 T={T} (vs {what})", ours, peer, name,
                            flops=layer.flops(T),
                            note=f"{gbs:.1f} GB/s weights, rel. err vs fp32 {err:.3f}"))
    return rows


def gpt_oss_rows(tokens):
    """gpt-oss experts (interleaved gate/up, clamped GLU, biases) on fixed routing: gptcore's
    moe_experts against transformers' GptOssExperts, eager and grouped_mm, same weights."""
    H, I, E, k = GPT_OSS["H"], GPT_OSS["I"], GPT_OSS["E"], GPT_OSS["k"]
    g = torch.Generator().manual_seed(0)
    gate_up = torch.randn(E, 2 * I, H, generator=g) / H**0.5   # ours: (E, 2I, H), HF: (E, H, 2I)
    down = torch.randn(E, H, I, generator=g) / I**0.5          # ours: (E, H, I),  HF: (E, I, H)
    gub, db = torch.randn(E, 2 * I, generator=g) / 10, torch.randn(E, H, generator=g) / 10
    peers = {}
    for impl in ("eager", "grouped_mm"):
        cfg = GptOssConfig(hidden_size=H, intermediate_size=I, num_local_experts=E,
                           num_experts_per_tok=k)
        cfg._experts_implementation = impl
        experts = GptOssExperts(cfg)
        with torch.no_grad():
            experts.gate_up_proj.copy_(gate_up.transpose(1, 2))
            experts.gate_up_proj_bias.copy_(gub)
            experts.down_proj.copy_(down.transpose(1, 2))
            experts.down_proj_bias.copy_(db)
        peers[impl] = experts
    rows = []
    for T in tokens:
        x = torch.randn(T, H, generator=g)
        weights, indices = gptcore.route(torch.randn(T, E, generator=g), k, scoring="topk_softmax")
        fns = {f"hf-GptOssExperts-{n}": (lambda m=m: m(x, indices, weights)) for n, m in peers.items()}
        ours, peer, name = against_peers(
            lambda: gptcore.moe_experts(x, indices, weights, gate_up, down, activation="gpt_oss",
                                        gate_up_bias=gub, down_bias=db), fns, T)
        rows.append(Row("moe", f"fp32 gpt_oss experts H{H} I{I} E{E} k{k} T={T}", ours, peer,
                        name, flops=2 * T * k * 3 * H * I))
    return rows


def backward_row(layer, T):
    x = torch.randn(T, layer.H)
    params = [torch.nn.Parameter(t.clone()) for t in (layer.router, layer.gate_up, layer.down)]

    def ours():
        xr = x.detach().requires_grad_()
        gptcore.moe(xr, *params, layer.k)[0].sum().backward()

    block = layer.peers["eager"]
    xr = x.detach().requires_grad_()
    times = time_interleaved({"ours": ours, "peer": lambda: block(xr[None]).sum().backward()}, 3)
    t_ours, peer = times["ours"], times["peer"]
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
    rows += gpt_oss_rows([1, 16] if quick else [1, 16, 128, 512])
    return rows


def test_moe_forward(benchmark):
    layer = Layer(H=256, I=512, E=8, k=2)
    x = torch.randn(16, 256)
    with torch.no_grad():
        benchmark(layer.ours, x)


if __name__ == "__main__":
    main(run, __doc__)
