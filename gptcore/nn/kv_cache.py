"""gptcore.nn.KVCache: one attention layer's keys and values, preallocated, for decoding.

Full-attention layers keep every position in a buffer of `max_len` slots. Sliding-window
layers keep only the last `window` positions in a ring buffer: a decode step's query sees
all of them, so their order in the buffer does not matter to attention."""
import torch


def keys_needed(window):
    """How many past keys (including its own) a causal query can see under `window`, or None
    for all of them. `window` as in gptcore.attention: None, an int W, or (left, right)."""
    if window is None:
        return None
    if isinstance(window, int):
        return window
    left = window[0]
    return None if left < 0 else left + 1


class KVCache:
    """k, v: (B, Hkv, capacity, D) buffers; `length` counts the positions written so far
    (the position of the next token). capacity = max_len, or the window for a window layer."""

    def __init__(self, batch, n_kv_heads, head_dim, max_len, *, window=None,
                 dtype=torch.float32, device=None):
        needed = keys_needed(window)
        self.ring = needed is not None and needed < max_len
        self.capacity = needed if self.ring else max_len
        self.max_len = max_len
        shape = (batch, n_kv_heads, self.capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def update(self, k, v):
        """Stores k, v (B, Hkv, S, D) at the next S positions; returns the keys and values the
        new queries attend to, (B, Hkv, Sk, D), oldest first unless S == 1 in a full ring."""
        S, start = k.shape[2], self.length
        if start + S > self.max_len:
            raise ValueError(f"KVCache: expected at most max_len={self.max_len} positions, got "
                             f"{start + S}")
        self.length = start + S
        if not self.ring:
            self.k[:, :, start:start + S] = k
            self.v[:, :, start:start + S] = v
            return self.k[:, :, :start + S], self.v[:, :, :start + S]
        C = self.capacity
        if S == 1:                                                   # the decode step
            self.k[:, :, start % C] = k[:, :, 0]
            self.v[:, :, start % C] = v[:, :, 0]
            n = min(start + 1, C)
            return self.k[:, :, :n], self.v[:, :, :n]
        # a chunk of several queries needs the past in order: (at most C positions)
        past = torch.arange(max(0, start - C), start, device=k.device) % C
        k_all = torch.cat((self.k.index_select(2, past), k), dim=2)
        v_all = torch.cat((self.v.index_select(2, past), v), dim=2)
        keep = min(S, C)
        slots = torch.arange(start + S - keep, start + S, device=k.device) % C
        self.k.index_copy_(2, slots, k[:, :, S - keep:])
        self.v.index_copy_(2, slots, v[:, :, S - keep:])
        return k_all, v_all
