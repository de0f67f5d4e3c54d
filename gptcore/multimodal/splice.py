"""LLaVA-style splicing: each placeholder token (<image>, <audio>, <video>) in a text is replaced
by that input's projected tokens, and the examples of a batch are packed end to end for
gptcore.attention_varlen (no padding). Labels at the inputs' positions are ignored (-1)."""
from dataclasses import dataclass

import torch

IGNORE = -1


@dataclass
class Packed:
    """A batch of N spliced sequences packed into T rows.

    inputs_embeds (T, d); labels (T,) int64: the text token at each position, IGNORE where an
    input's token sits; targets (T,) int64: the label of the next position in the same
    sequence (what position t must predict), IGNORE at each sequence's last position;
    cu_seqlens int32 (N+1,); max_seqlen int; is_input (T,) bool: positions holding inputs."""
    inputs_embeds: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    is_input: torch.Tensor

    @property
    def lengths(self):
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()


def splice(token_ids, inputs, placeholders, embed):
    """token_ids: N sequences of text token ids (lists or 1-D int tensors) with placeholders;
    inputs: N lists of (kind, tokens (n, d)) in the order their placeholders appear;
    placeholders: {kind: token id}; embed: ids (L,) int64 -> (L, d) (the text model's table).
    Returns a Packed batch. A sequence may hold any number and kinds of inputs, or none."""
    if len(token_ids) != len(inputs):
        raise ValueError(f"inputs: expected one list per sequence ({len(token_ids)}), "
                         f"got {len(inputs)}")
    kind_of = {token: kind for kind, token in placeholders.items()}
    ids = [torch.as_tensor(seq, dtype=torch.int64).reshape(-1) for seq in token_ids]
    flat_ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int64)
    text = embed(flat_ids)                                        # (sum L, d)
    pieces, labels, lengths, offset = [], [], [], 0
    for n, (seq, seq_inputs) in enumerate(zip(ids, inputs)):
        wanted = [kind_of[t] for t in seq.tolist() if t in kind_of]
        given = [kind for kind, _ in seq_inputs]
        if wanted != given:
            raise ValueError(f"inputs[{n}]: expected inputs of kinds {wanted} (the placeholders' "
                             f"order), got {given}")
        length, start, next_input = 0, 0, iter(seq_inputs)
        for i, token in enumerate(seq.tolist() + [None]):
            if token is not None and token not in kind_of:
                continue
            if i > start:                                         # the text run before it
                pieces.append(text[offset + start:offset + i])
                labels.append(seq[start:i])
                length += i - start
            if token is not None:
                _, tokens = next(next_input)                      # (n_tokens, d)
                pieces.append(tokens)
                labels.append(torch.full((tokens.shape[0],), IGNORE, dtype=torch.int64))
                length += tokens.shape[0]
            start = i + 1
        lengths.append(length)
        offset += len(seq)
    labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    d = text.shape[-1]
    embeds = torch.cat(pieces) if pieces else text.new_zeros(0, d)
    cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    targets = torch.full_like(labels, IGNORE)
    if labels.numel() > 1:
        targets[:-1] = labels[1:]
    ends = cu_seqlens[1:].long() - 1                              # each sequence's last position
    targets[ends[cu_seqlens[1:] > cu_seqlens[:-1]]] = IGNORE
    device = embeds.device
    return Packed(embeds, labels.to(device), targets.to(device), cu_seqlens.to(device),
                  max(lengths, default=0), (labels == IGNORE).to(device))


def to_padded(packed):
    """The same batch padded: inputs_embeds (N, S, d) with zeros after each sequence's end,
    targets (N, S) with IGNORE there, and the (N, S) bool mask of real positions."""
    lengths = packed.lengths
    N, S, d = len(lengths), packed.max_seqlen, packed.inputs_embeds.shape[-1]
    device = packed.inputs_embeds.device
    mask = (torch.arange(S, device=device)[None, :]
            < torch.tensor(lengths, device=device)[:, None])              # (N, S)
    embeds = packed.inputs_embeds.new_zeros(N, S, d)
    embeds[mask] = packed.inputs_embeds
    targets = torch.full((N, S), IGNORE, dtype=torch.int64, device=device)
    targets[mask] = packed.targets
    return embeds, targets, mask
