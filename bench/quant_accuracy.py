"""What weight-only quantisation costs in accuracy, measured on a trained gptcore.GPT (the names
model): held-out perplexity at fp32 and after gptcore.quantize at each format, and each linear
layer's output error against its fp32 layer on the same inputs (relative RMS). Not a timing.

    python bench/quant_accuracy.py --time-budget 60            # trains the names model here
    python bench/quant_accuracy.py --ckpt DIR                  # a `gptcore train --preset names` run

writes bench/results/quant-accuracy-<UTC stamp>.json (and prints a table)."""
import argparse
import copy
import json
import math
import time

import torch

import gptcore
from gptcore.nn import QuantizedLinear
from gptcore.training import data
from harness import environment, results_path

FORMATS = ("bf16", "int8", "int4", "mxfp4")


def train_names(seconds, seed=0):
    """The names preset trained with Adam for `seconds` (a stand-in for `gptcore train --preset
    names`, with its data split and learning rate). Returns (model, val documents, tokenizer)."""
    torch.manual_seed(seed)
    docs, tok = data.load_names(), data.CharTokenizer.names()
    train, val = data.split(docs, 0.1, seed)
    model = gptcore.GPT(gptcore.GPTConfig.preset("names"))
    block = model.config.block_size
    seqs = data.encode_documents(train, tok, block)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.0)
    g, start, step = torch.Generator().manual_seed(seed), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        pick = torch.randint(0, len(seqs), (64,), generator=g).tolist()
        batch = data.padded_batch([seqs[i] for i in pick])
        _, loss = model(batch["idx"], batch["targets"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    print(f"trained {step} steps in {seconds} s, last train loss {loss.item():.3f}")
    return model.eval(), val, tok


@torch.no_grad()
def val_loss(model, seqs):
    """Mean cross-entropy per predicted token over the held-out names."""
    total, count = 0.0, 0
    for i in range(0, len(seqs), 512):
        batch = data.padded_batch(seqs[i:i + 512])
        logits, _ = model(batch["idx"])
        mask = batch["targets"] >= 0
        total += torch.nn.functional.cross_entropy(logits[mask], batch["targets"][mask],
                                                   reduction="sum").item()
        count += int(mask.sum())
    return total / count


@torch.no_grad()
def layer_errors(model, quantized, idx):
    """{layer: relative RMS error} of each quantised layer's output against the fp32 layer's on
    the inputs the fp32 model feeds it."""
    inputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(quantized.get_submodule(name), QuantizedLinear):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: inputs.__setitem__(name, (args[0], out))))
    model(idx)
    for h in hooks:
        h.remove()
    errors = {}
    for name, (x, want) in inputs.items():
        got = quantized.get_submodule(name)(x)
        errors[name] = ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a names run directory (default: train one here)")
    parser.add_argument("--time-budget", type=float, default=60.0, help="training seconds")
    args = parser.parse_args()
    env = environment()
    if args.ckpt:
        from gptcore.training.checkpoint import load_model
        model, _ = load_model(args.ckpt)
        model.eval()
        tok = data.CharTokenizer.names()
        _, val = data.split(data.load_names(), 0.1, 0)
        source = {"ckpt": args.ckpt}
    else:
        model, val, tok = train_names(args.time_budget)
        source = {"trained_seconds": args.time_budget}
    seqs = data.encode_documents(val, tok, model.config.block_size)
    probe = data.padded_batch(seqs[:256])["idx"]
    base = val_loss(model, seqs)
    rows = [{"format": "fp32", "val_loss": base, "perplexity": math.exp(base)}]
    for fmt in FORMATS:
        quantized = gptcore.quantize(copy.deepcopy(model), fmt, keep_original=False)
        loss, errors = val_loss(quantized, seqs), layer_errors(model, quantized, probe)
        rows.append({"format": fmt, "val_loss": loss, "perplexity": math.exp(loss),
                     "perplexity_change_pct": 100 * (math.exp(loss - base) - 1),
                     "layer_rel_error_max": max(errors.values()),
                     "layer_rel_error_mean": sum(errors.values()) / len(errors),
                     "layer_rel_error": errors})
    print(f"{'format':<7} {'val loss':>9} {'ppl':>7} {'ppl change':>11} {'layer err mean':>15} "
          f"{'max':>7}")
    for r in rows:
        change = f"{r['perplexity_change_pct']:+.2f}%" if "perplexity_change_pct" in r else "-"
        mean = f"{100 * r['layer_rel_error_mean']:.2f}%" if "layer_rel_error" in r else "-"
        worst = f"{100 * r['layer_rel_error_max']:.2f}%" if "layer_rel_error" in r else "-"
        print(f"{r['format']:<7} {r['val_loss']:>9.4f} {r['perplexity']:>7.3f} {change:>11} "
              f"{mean:>15} {worst:>7}")
    path = results_path("quant-accuracy")
    path.write_text(json.dumps({"environment": env, "model": "names", **source,
                                "val_names": len(seqs), "rows": rows}, indent=1))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
