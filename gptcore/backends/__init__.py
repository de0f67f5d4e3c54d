"""The backends that serve gptcore's ops, one folder each: `ref` (pure PyTorch, the fallback and
the test oracle), `cpp` (the C++ extension gptcore._C, CPU tensors) and `triton` (CUDA tensors).
gptcore.ops.backend imports a backend the first time a call needs it."""
