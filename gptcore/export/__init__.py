"""Exporting a trained gptcore GPT: a transformers model directory (hf.py) and a GGUF file for
llama.cpp (gguf_file.py); `gptcore export` (cli.py)."""
