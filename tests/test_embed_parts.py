"""The Matryoshka loss, the corrupted-names task, the retrieval metrics and the pooling of
gptcore.embed, each against hand computations on small inputs."""
import itertools
import math
import random

import pytest
import torch

from gptcore.embed.loss import info_nce, matryoshka_loss
from gptcore.embed.metrics import funnel_accuracy, target_ranks, topk_accuracy
from gptcore.embed.pooling import last_pool, mean_pool, pack, unpad
from gptcore.embed.task import (apply_edit, corrupt, edit_distance, hard_negatives, make_task,
                                neighbours)


def _hand_info_nce(a, b, tau):
    """Symmetric InfoNCE by scalar loops in float64 on already-normalised rows (lists of lists)."""
    n = len(a)
    sim = [[sum(x * y for x, y in zip(a[i], b[j])) / tau for j in range(n)] for i in range(n)]
    row = sum(math.log(sum(math.exp(s) for s in sim[i])) - sim[i][i] for i in range(n)) / n
    col = sum(math.log(sum(math.exp(sim[j][i]) for j in range(n))) - sim[i][i] for i in range(n)) / n
    return 0.5 * (row + col)


def _hand_normalise(rows, k):
    out = []
    for r in rows:
        norm = math.sqrt(sum(x * x for x in r[:k]))
        out.append([x / norm for x in r[:k]])
    return out


@pytest.mark.parametrize("n,d,dims,weights", [(5, 8, (2, 4, 8), None), (3, 6, (1, 6), (0.5, 2.0)),
                                               (1, 4, (4,), None)])
def test_matryoshka_loss_is_the_weighted_sum_of_prefix_losses(n, d, dims, weights):
    torch.manual_seed(0)
    a, b = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    tau = 0.3
    got = matryoshka_loss(a, b, dims, weights=weights, temperature=tau).item()
    w = weights or (1.0,) * len(dims)
    want = sum(wk * _hand_info_nce(_hand_normalise(a.tolist(), k), _hand_normalise(b.tolist(), k), tau)
               for k, wk in zip(dims, w))
    assert got == pytest.approx(want, rel=1e-10)   # float64 both ways: only rounding differs


def test_baseline_is_the_full_dim_loss_and_temperature_can_learn():
    torch.manual_seed(1)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    full = info_nce(torch.nn.functional.normalize(a, dim=-1),
                    torch.nn.functional.normalize(b, dim=-1), 0.1)
    assert torch.equal(matryoshka_loss(a, b, (6,), temperature=0.1), full)
    log_scale = torch.zeros((), requires_grad=True)
    matryoshka_loss(a, b, (2, 6), temperature=log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad != 0


@pytest.mark.parametrize("dims,weights,err", [((), None, TypeError), ((4, 2), None, ValueError),
                                              ((0, 2), None, ValueError), ((2, 7), None, ValueError),
                                              ((2, 2), None, ValueError), ((2, 6), (1.0,), ValueError),
                                              ((2.0, 6), None, TypeError)])
def test_matryoshka_loss_rejects_bad_dims(dims, weights, err):
    a = torch.randn(3, 6)
    with pytest.raises(err, match="dims|weights"):
        matryoshka_loss(a, a, dims, weights=weights)


def test_matryoshka_loss_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="a, b"):
        matryoshka_loss(torch.randn(3, 6), torch.randn(3, 5), (2,))
    with pytest.raises(ValueError, match="temperature"):
        matryoshka_loss(torch.randn(3, 6), torch.randn(3, 6), (2,), temperature=0.0)


@pytest.mark.parametrize("a,b,d", [("kitten", "sitting", 3), ("ab", "ba", 1), ("ca", "abc", 3),
                                   ("", "abc", 3), ("emma", "emma", 0), ("anna", "ana", 1),
                                   ("john", "jhon", 1), ("maria", "mraia", 1), ("maria", "mraie", 2)])
def test_edit_distance_by_hand(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_each_edit_kind_is_one_edit():
    rng = random.Random(0)
    for name, kind in itertools.product(["ab", "emma", "christopher"], ["substitute", "delete",
                                                                         "insert", "transpose"]):
        for _ in range(20):
            out = apply_edit(name, kind, rng)
            assert edit_distance(name, out) == 1, (name, kind, out)
            assert len(out) - len(name) == {"insert": 1, "delete": -1}.get(kind, 0)
    with pytest.raises(ValueError, match="transposition"):
        apply_edit("aaa", "transpose", rng)
    with pytest.raises(ValueError, match="deletion"):
        apply_edit("a", "delete", rng)
    with pytest.raises(ValueError, match="kind"):
        apply_edit("ab", "swap", rng)


def test_corrupt_makes_one_or_two_edits_and_avoids_candidates():
    rng = random.Random(3)
    distances = [edit_distance("isabella", corrupt("isabella", rng)) for _ in range(400)]
    assert set(distances) == {1, 2}
    avoid = {"ann", "anne", "an"}
    for _ in range(200):
        assert corrupt("ann", rng, avoid=avoid) not in avoid | {"ann"}
    assert corrupt("emma", random.Random(5)) == corrupt("emma", random.Random(5))
    with pytest.raises(ValueError, match="name"):
        corrupt("", rng)


def test_neighbours_match_brute_force():
    rng = random.Random(7)
    pool = sorted({"".join(rng.choice("abn") for _ in range(rng.randint(2, 5))) for _ in range(120)})
    names = pool[::3] + ["bbbbbbb"]
    alone = neighbours(pool, 2)
    assert all(alone[a] == {b for b in pool if b != a and edit_distance(a, b) <= 2} for a in pool)
    one = neighbours(names, 1, pool)
    assert all(one[a] == {b for b in pool if b != a and edit_distance(a, b) <= 1} for a in names)
    two = neighbours(names, 2, pool)
    assert all(two[a] == {b for b in pool if b != a and edit_distance(a, b) <= 2} for a in names)
    assert two["bbbbbbb"] == set()


def test_hard_negatives_and_the_hard_task():
    pool = ["jon", "john", "joan", "joanna", "christopher", "kristopher", "bartholomew", "maximilian"]
    targets = ["john", "christopher", "maximilian"]
    # jon, joan: 1 edit from john; kristopher: 2 from christopher; joanna is 3 from john
    assert hard_negatives(targets, pool) == ["joan", "jon", "kristopher"]
    task = make_task(targets, seed=0, pool=pool, max_distance=2)
    assert task.candidates == ["christopher", "john", "maximilian", "joan", "jon", "kristopher"]
    assert task.targets == [0, 1, 2]
    for q, t in zip(task.queries, task.targets):
        assert q not in task.candidates and 1 <= edit_distance(q, task.candidates[t]) <= 2
    assert make_task(targets, seed=0, pool=pool).candidates[3:] == ["joan", "jon"]
    assert make_task(targets, seed=0).candidates == ["christopher", "john", "maximilian"]


def test_topk_accuracy_and_ranks_by_hand():
    candidates = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    queries = torch.tensor([[0.9, 0.1, 5.0], [0.5, 0.5, 0.0], [0.0, 2.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    # full cosines: q0 -> c0 0.18, c1 0.02, c2 0.13 (rank 0); q1 -> c2 0.99 > c0 = c1 0.71 (rank 2:
    # a tie counts against us); q2 -> c1 1.0 (rank 0)
    assert target_ranks(queries, candidates, targets).tolist() == [0, 2, 0]
    # on the first dimension only every non-zero value has cosine +-1: q2's first coordinate is 0
    assert target_ranks(queries, candidates, targets, dim=1).tolist() == [1, 1, 2]
    got = topk_accuracy(queries, candidates, targets, ks=(1, 2, 3))
    assert got == pytest.approx({1: 2 / 3, 2: 2 / 3, 3: 1.0}, rel=1e-6)   # a float32 mean of 0/1


def test_funnel_shortlists_on_the_prefix_and_reranks_on_the_full_vector():
    queries = torch.tensor([[1.0, 0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0, -1.0], [0.6, 0.8, 0.0], [0.0, 1.0, 1.0]])
    targets = torch.tensor([1])
    # cosines on the 2-dim prefix: c0 1.0, c1 0.6, c2 0.0; on the full vector: c0 0, c1 0.42, c2 0.5
    assert funnel_accuracy(queries, candidates, targets, dim=2, shortlist=1, ks=(1,)) == {1: 0.0}
    assert funnel_accuracy(queries, candidates, targets, dim=2, shortlist=2, ks=(1,)) == {1: 1.0}
    assert funnel_accuracy(queries, candidates, targets, dim=2, shortlist=3, ks=(1, 2)) == {1: 0.0, 2: 1.0}
    assert topk_accuracy(queries, candidates, targets, dim=2, ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_funnel_against_brute_force():
    torch.manual_seed(0)
    queries, candidates = torch.randn(50, 8), torch.randn(30, 8)
    targets = torch.randint(0, 30, (50,))
    got = funnel_accuracy(queries, candidates, targets, dim=3, shortlist=5, ks=(1, 3))
    nq, nc = torch.nn.functional.normalize, candidates
    hits = {1: 0, 3: 0}
    for i in range(50):
        pre = [(nq(queries[i, :3], dim=0) @ nq(nc[j, :3], dim=0)).item() for j in range(30)]
        short = sorted(range(30), key=lambda j: -pre[j])[:5]
        full = sorted(short, key=lambda j: -(nq(queries[i], dim=0) @ nq(nc[j], dim=0)).item())
        for k in hits:
            hits[k] += targets[i].item() in full[:k]
    assert got == {k: v / 50 for k, v in hits.items()}


def test_pack_unpad_and_pooling_by_hand():
    tokens, cu, max_len = pack([[1, 2, 3], [4], [5, 6]])
    assert tokens.tolist() == [1, 2, 3, 4, 5, 6] and cu.tolist() == [0, 3, 4, 6] and max_len == 3
    assert cu.dtype == torch.int32
    idx = torch.tensor([[1, 2, 3], [4, 0, 0], [5, 6, 9]])
    t2, cu2, m2 = unpad(idx, torch.tensor([3, 1, 2]))
    assert torch.equal(t2, tokens) and torch.equal(cu2, cu) and m2 == 3
    hidden = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
                          requires_grad=True)
    assert mean_pool(hidden, cu).tolist() == [[2.0, 1.0], [4.0, 4.0], [6.0, 7.0]]
    assert last_pool(hidden, cu).tolist() == [[3.0, 2.0], [4.0, 4.0], [7.0, 8.0]]
    mean_pool(hidden, cu).sum().backward()
    # float32 division by the length: exact but for the rounding of 1/3
    assert hidden.grad[:, 0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5], rel=1e-6)
    with pytest.raises(ValueError, match="sequences"):
        pack([[1], []])
    with pytest.raises(ValueError, match="lengths"):
        unpad(idx, torch.tensor([3, 0, 2]))
