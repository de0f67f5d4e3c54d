"""LLaVA-style splicing: each placeholder token (<image>, <audio>, <video>) in a text is replaced
by that input's projected tokens, and the examples of a batch are packed end to end for
gptcore.attention_varlen (no padding). Labels at the inputs' positions are ignored (-1).

Two stages, as ScatterMoE splits routing from compute: `layout` is pure index building from
token ids and each input's token count (the batch can be laid out before anything is encoded);
`splice` gathers text embeddings and input tokens into that layout."""
from dataclasses import dataclass

import torch

from gptcore.ops import packing

IGNORE = -1


@dataclass
class Layout:
    """Where every row of a packed batch of N sequences (T rows) comes from.

    source (T,) int64: row of cat(text embeddings, then the inputs' tokens kind by kind in
    `placeholders` order, each kind's inputs in order of appearance); labels (T,) int64: the
    text token at each row, IGNORE where an input's token sits; targets (T,) int64: the label
    of the next row of the same sequence (what row t must predict), IGNORE at each sequence's
    last row; cu_seqlens int32 (N+1,); max_seqlen int; is_input (T,) bool."""
    source: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    is_input: torch.Tensor

    @property
    def lengths(self):
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()


@dataclass
class Packed:
    """A spliced batch: inputs_embeds (T, d) and its Layout."""
    inputs_embeds: torch.Tensor
    layout: Layout


def layout(token_ids, input_kinds, input_counts, placeholders):
    """token_ids: N sequences of text token ids with placeholders; input_kinds / input_counts:
    N lists, the kind and token count of each input in the order its placeholder appears;
    placeholders: {kind: token id}. A sequence may hold any number and kinds of inputs."""
    if not len(token_ids) == len(input_kinds) == len(input_counts):
        raise ValueError(f"input_kinds, input_counts: expected one list per sequence "
                         f"({len(token_ids)}), got {len(input_kinds)} and {len(input_counts)}")
    kind_of = {token: kind for kind, token in placeholders.items()}
    n_text = sum(len(seq) for seq in token_ids)
    counts_by_kind = {kind: 0 for kind in placeholders}
    for kinds, counts in zip(input_kinds, input_counts):
        for kind, count in zip(kinds, counts):
            counts_by_kind[kind] = counts_by_kind.get(kind, 0) + count
    next_row, start = {}, n_text                        # first unused row of each kind's block
    for kind in placeholders:
        next_row[kind], start = start, start + counts_by_kind[kind]
    source, labels, lengths, text_row = [], [], [], 0
    for n, seq in enumerate(token_ids):
        seq = [int(t) for t in seq]
        wanted = [kind_of[t] for t in seq if t in kind_of]
        if wanted != list(input_kinds[n]) or len(input_counts[n]) != len(wanted):
            raise ValueError(f"input_kinds[{n}]: expected inputs of kinds {wanted} (the "
                             f"placeholders' order), got {list(input_kinds[n])} with "
                             f"{len(input_counts[n])} counts")
        length, inputs = 0, iter(zip(input_kinds[n], input_counts[n]))
        for i, token in enumerate(seq):
            if token in kind_of:
                kind, count = next(inputs)
                source.append(torch.arange(next_row[kind], next_row[kind] + count))
                labels.append(torch.full((count,), IGNORE, dtype=torch.int64))
                next_row[kind] += count
                length += count
            else:
                source.append(torch.tensor([text_row + i]))
                labels.append(torch.tensor([token]))
                length += 1
        text_row += len(seq)
        lengths.append(length)
    empty = torch.zeros(0, dtype=torch.int64)
    source = torch.cat(source) if source else empty
    labels = torch.cat(labels) if labels else empty
    cu_seqlens = packing.cu_seqlens(lengths)
    targets = torch.full_like(labels, IGNORE)
    targets[:-1] = labels[1:]
    nonempty = cu_seqlens[1:] > cu_seqlens[:-1]
    targets[cu_seqlens[1:][nonempty].long() - 1] = IGNORE        # no target across sequences
    return Layout(source, labels, targets, cu_seqlens, max(lengths, default=0), labels == IGNORE)


def splice(token_ids, inputs, placeholders, embed):
    """token_ids: N sequences of text token ids (lists or 1-D int tensors) with placeholders;
    inputs: N lists of (kind, tokens (n, d)) in the order their placeholders appear;
    placeholders: {kind: token id}; embed: ids (L,) int64 -> (L, d), the text model's table.
    Returns a Packed batch."""
    if len(token_ids) != len(inputs):
        raise ValueError(f"inputs: expected one list per sequence ({len(token_ids)}), "
                         f"got {len(inputs)}")
    kinds = [[kind for kind, _ in seq_inputs] for seq_inputs in inputs]
    counts = [[tokens.shape[0] for _, tokens in seq_inputs] for seq_inputs in inputs]
    plan = layout(token_ids, kinds, counts, placeholders)
    by_kind = {kind: [t for seq_inputs in inputs for k, t in seq_inputs if k == kind]
               for kind in placeholders}
    return gather(plan, token_ids, by_kind, embed)


def gather(plan, token_ids, tokens_by_kind, embed):
    """The Packed batch of `plan`: tokens_by_kind {kind: list of (n, d) or one (sum n, d)}."""
    ids = [torch.as_tensor(seq, dtype=torch.int64).reshape(-1) for seq in token_ids]
    flat_ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int64)
    text = embed(flat_ids.to(plan.source.device))                       # (L, d)
    rows = [text]
    for tokens in tokens_by_kind.values():
        if isinstance(tokens, torch.Tensor):
            rows.append(tokens)
        elif tokens:
            rows.append(torch.cat(tokens))
    embeds = torch.cat(rows).index_select(0, plan.source.to(text.device))    # (T, d)
    return Packed(embeds, plan)


def to_padded(packed):
    """The same batch padded: inputs_embeds (N, S, d) with zeros after each sequence's end,
    targets (N, S) with IGNORE there, and the (N, S) bool mask of real positions."""
    plan = packed.layout
    lengths = plan.lengths
    N, S, d = len(lengths), plan.max_seqlen, packed.inputs_embeds.shape[-1]
    device = packed.inputs_embeds.device
    mask = (torch.arange(S, device=device)[None, :]
            < torch.tensor(lengths, device=device)[:, None])              # (N, S)
    embeds = packed.inputs_embeds.new_zeros(N, S, d)
    embeds[mask] = packed.inputs_embeds
    targets = torch.full((N, S), IGNORE, dtype=torch.int64, device=device)
    targets[mask] = plan.targets.to(device)
    return embeds, targets, mask
