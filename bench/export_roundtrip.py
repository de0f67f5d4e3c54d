"""Train in gptcore, serve anywhere, shown on one checkpoint: `gptcore export --to hf`, then
transformers' AutoModelForCausalLM and AutoTokenizer load the directory and generate greedily from
a prompt, beside gptcore's own greedy generation from the same checkpoint. Prints both texts and
whether the tokens are identical; the last line is JSON (bench/record.py keeps it).

    python bench/export_roundtrip.py --ckpt runs/shakespeare --prompt "ROMEO:" --tokens 200
"""
import argparse
import json
import subprocess
import sys
import tempfile

import torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a run or checkpoint of `gptcore train`")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--tokens", type=int, default=200, help="new tokens, greedy (at most "
                        "what the block leaves after the prompt: GPT.generate's window)")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gptcore.training import checkpoint, data
    model, meta = checkpoint.load_model(args.ckpt)
    model.eval()
    gtok = data.tokenizer_from_dict(meta["tokenizer"])
    prompt = gtok.encode(args.prompt)
    new = min(args.tokens, model.config.block_size - len(prompt))
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/hf"
        command = [sys.executable, "-m", "gptcore", "export", "--ckpt", args.ckpt, "--to", "hf",
                   out]
        print("$ gptcore export --ckpt", args.ckpt, "--to hf", out, flush=True)
        subprocess.run(command, check=True)
        hf = AutoModelForCausalLM.from_pretrained(out).eval()
        tok = AutoTokenizer.from_pretrained(out)
        ids = tok(args.prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            theirs = hf.generate(ids, max_new_tokens=new, do_sample=False)
        ours = model.generate(torch.tensor([prompt]), new, temperature=0)
    same = ours.tolist() == theirs.tolist()
    print(f"transformers ({type(hf).__name__}), greedy:\n{tok.decode(theirs[0])}\n")
    text = gtok.decode(ours[0].tolist())
    print(f"gptcore, greedy:\n{text}\n")
    print(json.dumps({"family": type(hf).__name__, "new_tokens": new,
                      "identical_tokens": same}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
