"""Weight-only quantised linear layers, CPU: decode GEMV rows (gptcore.quantized_linear at bf16 /
int8 / int4 / MXFP4 vs torch's F.linear on the fp32 weight, same inputs), with the weight bytes
streamed per call as GB/s beside the read roof; and whole-model batch-1 decode of the Llama
config of bench_models.py (random weights; 64 greedy tokens after a 128-token prompt), seconds
per decode token by each tool's own timing (bench/decode_peers.py), weight bytes per token beside
the read roof: transformers fp32 (the peer of every row) and bf16; gptcore.patch +
gptcore.quantize at each format; gptcore.GPT of the same shapes at each format; torchao int8/int4
weight-only (compiled) and optimum-quanto qint8/qint4; llama.cpp (llama-cpp-python) on the same
weights as GGUF F32 / BF16 / Q8_0 / Q4_0 (bench/gguf_llama.py), whose ratio at the same format
each row's note gives. Peers need `pip install -e .[bench-peers]`; those missing are named in
the output and in the JSON's environment.peers_missing.

The decode GEMVs as a token meets them, weights from memory: --from-memory (those rows only).

    python bench/bench_quant.py [--quick] [--json bench/results/quant-<stamp>.json]
    GPTCORE_ISA=avx2 python bench/bench_quant.py --from-memory"""
import argparse
import gc
import sys
import time

import torch

import gptcore
from bench_models import CONFIGS, QUICK
from decode_peers import AMX
from gptcore import QuantizedWeight
from gptcore.ops.backend import select
from harness import Row, environment, measure_roofs, report, stream_bytes, time_interleaved

FORMATS = ("bf16", "int8", "int4", "mxfp4")
# The Llama layers' (N, K): q/o, k|v, gate|up, down; and the LM head.
SHAPES = [(1024, 1024), (256, 1024), (2816, 1024), (1024, 2816), (32000, 1024)]
REPEAT = 3


def gemv_rows(quick):
    rows = []
    g = torch.Generator().manual_seed(0)
    for N, K in SHAPES[:2] if quick else SHAPES:
        w = torch.randn(N, K, generator=g)
        for T in (1, 4):
            x = torch.randn(T, K, generator=g)
            for fmt in FORMATS:
                q = gptcore.quantize_weight(w, fmt)
                best = time_interleaved({
                    "ours": lambda: gptcore.quantized_linear(x, q),
                    "peer": lambda: torch.nn.functional.linear(x, w)}, repeat=REPEAT)
                rows.append(Row("qlinear", f"{fmt} N{N} K{K} T{T}", best["ours"], best["peer"],
                                "F.linear fp32", bytes=q.nbytes(), stream="read"))
    return rows


def gemv_memory_rows(quick):
    """The LM head's GEMV as a decode token meets it, its weights from memory rather than cache:
    each function runs the same call over enough copies of the weight to fill stream_bytes() (8x
    a 32 MiB L3), and a row's time is one call's share of the fastest pass."""
    N, K = SHAPES[2] if quick else SHAPES[-1]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=g)

    def copies(nbytes, make):
        return [make() for _ in range(-(-stream_bytes() // nbytes))]

    fp32 = copies(w.numel() * 4, w.clone)
    stored = {fmt: gptcore.quantize_weight(w, fmt) for fmt in FORMATS}
    quantized = {fmt: copies(q.nbytes(), lambda q=q: QuantizedWeight(
        q.format, q.data.clone(), None if q.scales is None else q.scales.clone(), q.group_size,
        q.in_features)) for fmt, q in stored.items()}
    # The op as QuantizedLinear.forward calls it (no Python re-check: ~60 us, a tenth of a call)
    op = select("quantized_linear", torch.device("cpu")).default
    rows = []
    for T in (1, 4):
        x = torch.randn(T, K, generator=g)
        fns = {"peer": lambda: [torch.nn.functional.linear(x, c) for c in fp32]}
        fns |= {fmt: lambda qs=qs: [op(x, q.data, q.scales, q.format, q.group_size, None)
                                    for q in qs]
                for fmt, qs in quantized.items()}
        best = time_interleaved(fns, repeat=REPEAT)
        for fmt, qs in quantized.items():
            rows.append(Row("qlinear", f"{fmt} N{N} K{K} T{T} from memory", best[fmt] / len(qs),
                            best["peer"] / len(fp32), "F.linear fp32 from memory",
                            bytes=stored[fmt].nbytes(), stream="read"))
    return rows


def _model(quick, dtype=torch.float32):
    import transformers
    cls, options = CONFIGS["llama"]
    config = getattr(transformers, cls)(vocab_size=32000, **{**options, **(QUICK if quick else {})})
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa",
                                                         dtype=dtype).eval()


def _gpt(quick):
    """A gptcore.GPT of the Llama config's shapes (its own random weights): RoPE, RMSNorm,
    SwiGLU, GQA."""
    _, o = CONFIGS["llama"]
    torch.manual_seed(0)
    return gptcore.GPT(gptcore.GPTConfig(
        vocab_size=32000, block_size=256, n_layer=1 if quick else o["num_hidden_layers"],
        d_model=o["hidden_size"], n_head=o["num_attention_heads"],
        n_kv_head=o["num_key_value_heads"], d_ff=o["intermediate_size"], mlp="swiglu",
        norm_eps=1e-6)).eval()


def _weight_bytes(model):
    """Bytes of the weights one decode token reads: every linear layer (the embedding reads one row)."""
    from gptcore.nn import QuantizedLinear
    total = 0
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            total += m.qweight.nbytes()
        elif isinstance(m, torch.nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return total


def _gguf_bytes(path):
    """Bytes of a GGUF file's weights one decode token reads (all but the embedding table)."""
    import gguf
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors
               if t.name != "token_embd.weight")


def _variants(quick, tmp, notes):
    """{name: (format, seconds-per-decode-token function (ids, new), weight bytes per token)}."""
    from decode_peers import (PeerMissing, gpt_decode, hf_decode, llamacpp_decoder,
                              quanto_model, torchao_model)
    from gguf_llama import llama_to_gguf

    def hf(model):
        return lambda ids, new: hf_decode(model, ids, new)

    out = {"hf fp32": ("fp32", hf(_model(quick)), _weight_bytes(_model(quick))),
           "hf bf16": ("bf16", hf(_model(quick, torch.bfloat16)),
                       _weight_bytes(_model(quick, torch.bfloat16)))}
    for fmt in FORMATS:
        model = gptcore.quantize(gptcore.patch(_model(quick)), fmt, skip=(),
                                 keep_original=False)
        out[f"gptcore {fmt}"] = (fmt, hf(model), _weight_bytes(model))
    gpt = _gpt(quick)
    out["gptcore.GPT fp32"] = ("fp32", lambda ids, new: gpt_decode(gpt, ids, new),
                               _weight_bytes(gpt))
    for fmt in FORMATS:
        q = gptcore.quantize(_gpt(quick), fmt, skip=(), keep_original=False)
        out[f"gptcore.GPT {fmt}"] = (fmt, lambda ids, new, q=q: gpt_decode(q, ids, new),
                                     _weight_bytes(q))
    for tool, make in (("torchao", torchao_model), ("quanto", quanto_model)):
        for fmt in ("int8", "int4"):
            if (tool, fmt) in NOT_RUN:
                notes[f"{tool} {fmt}"] = NOT_RUN[tool, fmt]
                continue
            try:
                model = make(_model(quick), fmt)
            except PeerMissing as e:
                notes[f"{tool} {fmt}"] = str(e)
                continue
            except Exception as e:                          # installed but fails on this model
                notes[f"{tool} {fmt}"] = f"{type(e).__name__}: {e}"
                continue
            nominal = gptcore.quantize(_model(quick), fmt, skip=(), keep_original=False)
            out[f"{tool} {fmt}"] = (fmt, hf(model), _weight_bytes(nominal))
    source = _model(quick)
    for gfmt, fmt in LLAMACPP.items():
        path = tmp / f"llama-{gfmt}.gguf"
        llama_to_gguf(source, path, gfmt)
        try:
            decode = llamacpp_decoder(path, torch.get_num_threads(), 256)
        except PeerMissing as e:
            notes["llama.cpp"] = str(e)
            break
        out[f"llama.cpp {gfmt}"] = (fmt, decode, _gguf_bytes(path))
    return out


# Peers left out, and why (measured on the Sapphire Rapids machine, 2026-12-05).
NOT_RUN = {("quanto", "int4"): "optimum-quanto 0.2.7 qint4: quantize + freeze + one forward of a "
           "single 512x256 layer did not finish in 300 s (timed out) beside torch 2.13 CPU"}

# llama.cpp's formats and the gptcore format each is compared with (Q4_0: int4 with G = 32).
LLAMACPP = {"F32": "fp32", "BF16": "bf16", "Q8_0": "int8", "Q4_0": "int4"}


def decode_rows(quick):
    """Decode seconds per token of every variant (each tool's own timing, min over interleaved
    rounds), as rows against transformers fp32, with the ratio to llama.cpp at the same format."""
    import tempfile
    from pathlib import Path
    prompt, new = (16, 8) if quick else (128, 64)
    ids = torch.randint(0, 32000, (1, prompt), generator=torch.Generator().manual_seed(1))
    notes = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = _variants(quick, Path(tmp), notes)
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(1 + REPEAT):                        # the first round warms up (compiles)
            for name, (_, fn, _) in variants.items():
                best[name] = min(best[name], fn(ids, new))
    llama = {fmt: best[f"llama.cpp {g}"] for g, fmt in LLAMACPP.items() if f"llama.cpp {g}" in best}
    rows = []
    for name, (fmt, _, nbytes) in variants.items():
        vs = f", {llama[fmt] / best[name]:.2f}x llama.cpp {fmt}" if fmt in llama else ""
        rows.append(Row("decode", f"llama {name} ({new} tok after {prompt})", best[name],
                        best["hf fp32"], "hf fp32", bytes=nbytes, stream="read",
                        note=f"{1 / best[name]:.1f} tok/s{vs}"))
    for peer, why in notes.items():
        print(f"  no row for {peer}: {why}", file=sys.stderr)
    del variants
    gc.collect()
    return rows, notes


def run(quick=False):
    """`gptcore bench`'s entry: the GEMV rows and the decode table (a peer that is not installed
    gets no row; why is printed on stderr)."""
    decode, _ = decode_rows(quick)
    return gemv_rows(quick) + decode


def _installed(dist):
    """The installed version of distribution `dist`, None when absent."""
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, one layer, 8 tokens")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--from-memory", action="store_true",
                        help="only the LM head's GEMV rows with its weights from memory")
    args = parser.parse_args()
    start = time.perf_counter()
    env = environment()
    roofs = measure_roofs()
    if args.from_memory:
        report(gemv_memory_rows(args.quick), roofs, args.json, env)
        return
    decode, missing = decode_rows(args.quick)
    env["peers_missing"] = missing
    env["peer_versions"] = {p: _installed(p) for p in ("llama_cpp_python", "torchao",
                                                       "optimum-quanto", "gguf")}
    env["llamacpp_extra_buffers"] = "off (AMX CPU: see decode_peers.AMX)" if AMX else "default"
    report(gemv_rows(args.quick) + decode, roofs, args.json, env)
    print(f"wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
