"""Weight-only quantised linear layers, CPU: decode GEMV rows (gptcore.quantized_linear at bf16 /
int8 / int4 / MXFP4 vs torch's F.linear on the fp32 weight, same inputs), with the weight bytes
streamed per call as GB/s beside the read roof; and whole-model batch-1 decode of the Llama
config of bench_models.py (random weights; 64 greedy tokens after a 128-token prompt) for
transformers fp32 (the peer) and bf16, and gptcore.patch + gptcore.quantize at each format.

    python bench/bench_quant.py [--quick] [--json bench/results/quant-<stamp>.json]

Peers not in this run (torchao, optimum-quanto, llama-cpp-python) are not installed in the
project's environment; see docs/quantize.md."""
import argparse
import gc
import sys
import time

import torch

import gptcore
from bench_models import CONFIGS, QUICK
from harness import Row, environment, measure_roofs, report, time_interleaved

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


def _model(quick, dtype=torch.float32):
    import transformers
    cls, options = CONFIGS["llama"]
    config = getattr(transformers, cls)(vocab_size=32000, **{**options, **(QUICK if quick else {})})
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa",
                                                         dtype=dtype).eval()


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


def decode_rows(quick):
    prompt, new = (16, 8) if quick else (128, 64)
    ids = torch.randint(0, 32000, (1, prompt), generator=torch.Generator().manual_seed(1))

    def decode(model):
        def run():
            with torch.no_grad():
                model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        return run

    peer = _model(quick)
    variants = {"hf fp32": (peer, None), "hf bf16": (_model(quick, torch.bfloat16), None)}
    for fmt in FORMATS:
        model = gptcore.quantize(gptcore.patch(_model(quick)), fmt, keep_original=False)
        variants[f"gptcore {fmt}"] = (model, fmt)
    best = time_interleaved({name: decode(m) for name, (m, _) in variants.items()}, repeat=REPEAT)
    rows = []
    for name, (model, _) in variants.items():
        per_token = best[name] / new
        rows.append(Row("decode", f"llama {name} {new} tok after {prompt}", best[name],
                        best["hf fp32"], "hf fp32", bytes=_weight_bytes(model) * new,
                        stream="read", note=f"{1 / per_token:.1f} tok/s (prefill included)"))
    del variants
    gc.collect()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, one layer, 8 tokens")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    start = time.perf_counter()
    env = environment()
    roofs = measure_roofs()
    rows = gemv_rows(args.quick) + decode_rows(args.quick)
    report(rows, roofs, args.json, env)
    print(f"wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
