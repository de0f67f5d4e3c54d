"""Batch-1 decode timers for bench_quant.py: one function per tool, each returning the seconds a
decode token took by that tool's own account (the prompt's prefill excluded), on the same weights.

- transformers (and models patched or quantised in place: gptcore, torchao, optimum-quanto):
  `generate` with a logits processor stamping the time of each step; a token's time is the span
  from the first stamp (the prefill's logits) to the last over the tokens decoded between.
- llama.cpp through llama-cpp-python: its own performance counters (llama_perf_context: the
  decode calls' milliseconds and count), greedy tokens picked from its logits.

Peers that do not install beside this torch raise PeerMissing with the reason, which the
benchmark prints and records instead of a row."""
import time

import numpy as np
import torch

from gptcore.cli import cpu_flags


class PeerMissing(RuntimeError):
    """A peer that cannot run here; the message says why."""


def hf_decode(model, ids, new):
    """Seconds per decode token of model.generate(ids), greedy, `new` tokens after ids."""
    import transformers
    stamps = []

    class Stamp(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            stamps.append(time.perf_counter())
            return scores

    with torch.no_grad():
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       logits_processor=transformers.LogitsProcessorList([Stamp()]))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def gpt_decode(model, ids, new):
    """Seconds per decode token of gptcore.GPT.generate (greedy, KV cache): the span between the
    first and last step of gptcore.model.sampling.generate's loop, stamped through next_token."""
    from gptcore.model import sampling
    stamps, pick = [], sampling.next_token

    def stamped(*args, **kwargs):
        stamps.append(time.perf_counter())
        return pick(*args, **kwargs)

    sampling.next_token = stamped
    try:
        model.generate(ids, new, temperature=0)
    finally:
        sampling.next_token = pick
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


# On a CPU with AMX, llama-cpp-python 0.3.36's CPU backend segfaults in its first Q8_0 / Q4_0
# decode when its extra buffer types (the AMX and repacked weight layouts) are on: seen on the
# Sapphire Rapids VM, on our GGUF files and on llama.cpp's own llama_model_quantize output alike,
# F32 and BF16 unaffected. There the peer runs with them off (llama_model_params.use_extra_bufts),
# which bench_quant.py records; other CPUs get llama.cpp's defaults.
AMX = "amx_tile" in cpu_flags()


def llamacpp_decoder(path, threads, n_ctx):
    """A function (ids, new) -> seconds per decode token of llama.cpp on the GGUF file `path`."""
    try:
        import llama_cpp
    except ImportError as e:
        raise PeerMissing(f"llama-cpp-python not installed ({e})") from e
    low = llama_cpp.llama_cpp                      # the C API module Llama() takes its defaults from
    defaults = low.llama_model_default_params
    if AMX:
        def without_extra_buffers():
            params = defaults()
            params.use_extra_bufts = False
            return params
        low.llama_model_default_params = without_extra_buffers
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
    finally:
        low.llama_model_default_params = defaults

    def greedy():
        """The argmax of the last evaluated position's logits (llm.scores holds them only with
        logits_all=True, which would copy every position's)."""
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).argmax())

    def decode(ids, new):
        llm.reset()
        llm.eval(ids[0].tolist())                            # prefill (not counted)
        llama_cpp.llama_perf_context_reset(llm.ctx)
        for _ in range(new - 1):
            llm.eval([greedy()])
        perf = llama_cpp.llama_perf_context(llm.ctx)
        return perf.t_eval_ms / 1e3 / perf.n_eval

    decode.llm = llm
    return decode


def torchao_model(model, fmt):
    """`model` quantised in place by torchao (int8 / int4 weight-only), forward compiled as its
    docs recommend (a static KV cache, torch.compile of the forward)."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
        from torchao.prototype.quantization.int4.inference_workflow import \
            PrototypeInt4WeightOnlyConfig
    except Exception as e:       # an ImportError, or a torchao built for another torch failing
        raise PeerMissing(f"torchao does not import: {type(e).__name__}: {e}") from e
    if fmt == "int8":
        quantize_(model, Int8WeightOnlyConfig())
    else:
        # torchao 0.18's int4 weight-only for CPU tensors (Int4OpaqueTensor: torch's
        # _weight_int4pack_mm_for_cpu); Int4WeightOnlyConfig's packings are CUDA / XPU ones.
        quantize_(model, PrototypeInt4WeightOnlyConfig(group_size=32))
    model.generation_config.cache_implementation = "static"
    model.forward = torch.compile(model.forward)
    return model


def quanto_model(model, fmt):
    """`model` quantised in place by optimum-quanto (qint8 / qint4 weights), frozen."""
    try:
        from optimum.quanto import freeze, qint4, qint8, quantize
    except Exception as e:
        raise PeerMissing(f"optimum-quanto does not import: {type(e).__name__}: {e}") from e
    quantize(model, weights=qint8 if fmt == "int8" else qint4)
    freeze(model)
    return model
