"""gptcore.ops.packing, the one lengths / padding-mask <-> packed-layout module, on hand-checked
cases (empty sequences and empty batches included)."""
import torch

from gptcore.ops import packing


def test_cu_seqlens_from_a_list_and_a_tensor():
    want = torch.tensor([0, 3, 3, 7], dtype=torch.int32)
    assert torch.equal(packing.cu_seqlens([3, 0, 4]), want)
    assert torch.equal(packing.cu_seqlens(torch.tensor([3, 0, 4])), want)
    assert torch.equal(packing.cu_seqlens([]), torch.zeros(1, dtype=torch.int32))


def test_max_seqlen():
    assert packing.max_seqlen(torch.tensor([0, 3, 3, 7], dtype=torch.int32)) == 4
    assert packing.max_seqlen(torch.zeros(1, dtype=torch.int32)) == 0


def test_unpad_and_repad_round_trip():
    keep = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    x = torch.arange(9.0).view(3, 3, 1)
    cu, longest = packing.unpad(keep)
    assert torch.equal(cu, torch.tensor([0, 2, 2, 5], dtype=torch.int32)) and longest == 3
    packed = x[keep]                                                    # (5, 1)
    assert packed.flatten().tolist() == [0.0, 1.0, 6.0, 7.0, 8.0]
    back = packing.repad(packed, keep)
    assert torch.equal(back, torch.where(keep[..., None], x, torch.zeros(())))


def test_unpad_of_an_empty_batch():
    cu, longest = packing.unpad(torch.zeros(0, 4, dtype=torch.bool))
    assert cu.tolist() == [0] and longest == 0
