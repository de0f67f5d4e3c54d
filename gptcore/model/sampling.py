"""Autoregressive generation for gptcore.GPT: temperature, top-k, top-p, a preallocated KV
cache (one prefill, then one token per step) or full recomputation of the prefix."""
import torch


def filter_logits(logits, top_k=None, top_p=None):
    """logits (B, V) with everything outside the top-k / the nucleus of mass top_p set to -inf."""
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_token(logits, temperature, top_k, top_p, generator):
    """logits (B, V) -> (B, 1): argmax when temperature == 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _check(model, idx, max_new_tokens, temperature, top_k, top_p):
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.dim() != 2:
        raise ValueError(f"idx: expected an int64 tensor (B, T), got "
                         f"{getattr(idx, 'dtype', type(idx).__name__)} "
                         f"{tuple(getattr(idx, 'shape', ()))}")
    if idx.shape[1] < 1:
        raise ValueError("idx: expected at least one token per row (e.g. BOS), got T=0")
    limit = model.config.block_size
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0 \
            or idx.shape[1] + max_new_tokens > limit:
        raise ValueError(f"max_new_tokens: expected an int in [0, block_size - T = "
                         f"{limit - idx.shape[1]}], got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: expected None or >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected None or in (0, 1], got {top_p}")


@torch.no_grad()
def generate(model, idx, max_new_tokens, *, temperature=1.0, top_k=None, top_p=None,
             use_cache=True, stop_token=None, generator=None):
    """See GPT.generate. Returns (B, T + n) int64."""
    _check(model, idx, max_new_tokens, temperature, top_k, top_p)
    B, T = idx.shape
    out = torch.empty(B, T + max_new_tokens, dtype=torch.int64, device=idx.device)
    out[:, :T] = idx
    done = torch.zeros(B, 1, dtype=torch.bool, device=idx.device)
    caches = model.make_caches(B, T + max_new_tokens) if use_cache else None
    n = T
    for step in range(max_new_tokens):
        if caches is None:
            logits = model(out[:, :n])[0][:, -1]                       # recompute the prefix
        else:
            feed = out[:, :n] if step == 0 else out[:, n - 1:n]        # prefill, then 1 token
            logits = model.decode(feed, caches)[:, -1]                 # (B, V)
        token = next_token(logits.float(), temperature, top_k, top_p, generator)
        if stop_token is not None:
            token = token.masked_fill(done, stop_token)
            done |= token == stop_token
        out[:, n] = token[:, 0]
        n += 1
        if stop_token is not None and bool(done.all()):
            break
    return out[:, :n]


@torch.no_grad()
def stream(model, prompt, max_new_tokens, *, temperature=1.0, top_k=None, top_p=None,
           generator=None, exclude=()):
    """Yields max_new_tokens new token ids (ints) after the ids `prompt`, one at a time as they
    are sampled (one row). Unlike generate, the text may outgrow block_size: up to it, one
    prefill and a KV cache; past it, the context slides (the last block_size tokens, recomputed
    each step, as nanoGPT's sampler does). exclude: ids never sampled (a BOS the stream never
    trained on)."""
    idx = torch.tensor([list(prompt)], dtype=torch.int64, device=model.wte.weight.device)
    limit = model.config.block_size
    idx = idx[:, -limit:]                                    # (1, T) with T <= block_size
    _check(model, idx, 0, temperature, top_k, top_p)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    caches = model.make_caches(1, limit)
    feed = idx
    for _ in range(max_new_tokens):
        if caches is not None:
            logits = model.decode(feed, caches)[:, -1]                # (1, V)
        else:
            logits = model(idx[:, -limit:])[0][:, -1]                 # the sliding window
        logits = logits.float()
        logits[:, list(exclude)] = float("-inf")
        token = next_token(logits, temperature, top_k, top_p, generator)  # (1, 1)
        yield int(token)
        idx = torch.cat([idx, token], dim=1)
        feed = token
        if idx.shape[1] > limit:
            caches = None                                    # the cache holds block_size at most
