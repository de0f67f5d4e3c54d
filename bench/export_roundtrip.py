"""Train in gptcore, serve anywhere, shown on one checkpoint: `gptcore export --to hf`, then
transformers' AutoModelForCausalLM and AutoTokenizer load the directory and generate greedily from
a prompt, beside gptcore's own greedy generation from the same checkpoint. With --gguf also
`gptcore export --to gguf`, loaded by llama.cpp (llama-cpp-python, which must be installed) and
decoded greedily from the same prompt ids. Prints the texts and whether the tokens are
identical; the last line is JSON (bench/record.py keeps it).

    python bench/export_roundtrip.py --ckpt runs/shakespeare --prompt "ROMEO:" --tokens 200 --gguf
"""
import argparse
import importlib.util
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
    parser.add_argument("--gguf", action="store_true", help="also through llama.cpp")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if args.gguf and importlib.util.find_spec("llama_cpp") is None:
        parser.error("--gguf: expected llama-cpp-python installed (pip install "
                     "llama-cpp-python), got no module llama_cpp")

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
        summary = {"family": type(hf).__name__, "new_tokens": new,
                   "identical_tokens": ours.tolist() == theirs.tolist()}
        if args.gguf:
            path = f"{tmp}/model.gguf"
            print("$ gptcore export --ckpt", args.ckpt, "--to gguf", path, flush=True)
            subprocess.run([sys.executable, "-m", "gptcore", "export", "--ckpt", args.ckpt,
                            "--to", "gguf", path], check=True)
            ids_gguf = llama_cpp_greedy(path, prompt, new, model.config.block_size)
            print(f"llama.cpp (GGUF F32), greedy:\n{gtok.decode(ids_gguf)}\n")
            summary["gguf_identical_tokens"] = ids_gguf == ours[0].tolist()
            summary["gguf_common_prefix"] = common_prefix(ids_gguf, ours[0].tolist()) - len(prompt)
    print(f"transformers ({type(hf).__name__}), greedy:\n{tok.decode(theirs[0])}\n")
    text = gtok.decode(ours[0].tolist())
    print(f"gptcore, greedy:\n{text}\n")
    print(json.dumps(summary))
    return 0 if summary["identical_tokens"] and summary.get("gguf_identical_tokens", True) else 1


def llama_cpp_greedy(path, prompt, new, block_size):
    """Prompt ids + `new` greedy ids from llama.cpp on the GGUF file (its own logits, argmax)."""
    import numpy as np
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=block_size, n_threads=torch.get_num_threads(),
                logits_all=True, verbose=False)       # scores rows are kept only with logits_all
    ids = list(prompt)
    llm.eval(ids)
    for _ in range(new):
        ids.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(ids[-1:])
    return ids


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


if __name__ == "__main__":
    sys.exit(main())
