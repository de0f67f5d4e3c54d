"""Packed variable-length sequences, the layout of gptcore.attention_varlen: tokens back to back
(T, ...), offsets cu_seqlens int32 (N+1,) starting at 0, and max_seqlen. The one place that
turns lengths or padding masks into that layout and back."""
import torch


def cu_seqlens(lengths, device=None):
    """Sequence lengths (a list or a 1-D tensor, N entries) -> offsets int32 (N+1,)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64, device=device)
    cu = torch.zeros(lengths.shape[0] + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = lengths.cumsum(0)
    return cu


def max_seqlen(cu):
    """The longest sequence of offsets cu (N+1,); 0 when there is none."""
    return int((cu[1:] - cu[:-1]).max()) if cu.shape[0] > 1 else 0


def unpad(keep):
    """A padding mask keep (B, S) bool, True where a position is real -> (cu_seqlens (B+1,),
    max_seqlen): x[keep] packs a (B, S, ...) tensor, `repad` puts the result back."""
    lengths = keep.sum(1)                                                    # (B,)
    return cu_seqlens(lengths), int(lengths.max()) if lengths.numel() else 0


def repad(packed, keep):
    """packed (T, ...) rows of the positions where keep (B, S) is True -> (B, S, ...), zeros
    at padded positions."""
    out = packed.new_zeros(*keep.shape, *packed.shape[1:])
    out[keep] = packed
    return out
