"""`gptcore export --ckpt DIR --to hf|gguf OUT`: a checkpoint of `gptcore train` as a
transformers model directory or a GGUF file."""
import json
import sys
from pathlib import Path

from gptcore.training import checkpoint, data


def export_command(args):
    try:
        out = Path(args.out)
        if out.exists():
            raise ValueError(f"OUT: expected a path that does not exist yet, got {args.out!r}")
        if not out.parent.is_dir():
            raise ValueError(f"OUT: expected a path in an existing directory, got {args.out!r}")
        model, meta = checkpoint.load_model(args.ckpt, argument="--ckpt")
        tok = data.tokenizer_from_dict(meta["tokenizer"]) if "tokenizer" in meta else None
        if args.to == "hf":
            from gptcore.export.hf import to_hf
            to_hf(model.eval(), out, tokenizer=tok)
        else:
            from gptcore.export.gguf_file import to_gguf
            to_gguf(model.eval(), out, tokenizer=meta.get("tokenizer"),
                    name=meta.get("preset", "gptcore"))
    except ValueError as err:
        print(f"gptcore export: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"ckpt": str(args.ckpt), "to": args.to, "out": str(out),
                      "family": "mixtral" if model.config.n_experts else "llama",
                      "params": model.num_params()}))
    return 0


def add_command(sub):
    """Registers `export` on the `gptcore` argument parser's subparsers."""
    p = sub.add_parser("export", help="a checkpoint as a transformers model or a GGUF file",
                       description="Writes a GPT checkpoint of `gptcore train` as a transformers "
                       "model directory (a RoPE/RMSNorm/SwiGLU GPT as Llama, its MoE twin as "
                       "Mixtral; config, safetensors, tokenizer) or a float32 GGUF file for "
                       "llama.cpp; other architectures are refused by name.")
    p.add_argument("--ckpt", required=True, metavar="DIR")
    p.add_argument("--to", required=True, choices=("hf", "gguf"))
    p.add_argument("out", metavar="OUT", help="the directory (hf) or file (gguf) to create")
    p.set_defaults(func=export_command)
