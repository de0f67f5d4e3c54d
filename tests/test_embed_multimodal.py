"""gptcore.embed's multimodal embedder: a packed mixed batch equals each item alone, the masked
Matryoshka InfoNCE against a float64 loop, recall against brute force, the answer rule on
hand-checked cases, and the demo end to end at a toy size."""
import argparse
import json
import math

import pytest
import torch

from gptcore.embed import multimodal_demo
from gptcore.embed.loss import matryoshka_loss
from gptcore.embed.multimodal import MultimodalEmbedder
from gptcore.embed.multimodal_task import (PAIRS, Item, PairBatches, Pools, answers, chance,
                                           directions, recall)
from gptcore.multimodal import data
from gptcore.multimodal.captioner import CaptionerConfig, Vocab


@pytest.fixture(scope="module")
def pools():
    return Pools(24, seed=3)


@pytest.fixture(scope="module")
def many_pools():
    return Pools(600, seed=3)        # 288 kinds of video: about 2 neighbours in speed each


def _model(fusion="early", inputs=None):
    torch.manual_seed(0)
    return MultimodalEmbedder(Vocab.for_captions(), d_embed=16, matryoshka_dims=(4, 8, 16),
                              fusion=fusion, inputs=inputs).eval()


# the encoders as the captioner has them, and as the demo's systems use them (pooled images,
# stacked video frames)
INPUTS = {"frames": CaptionerConfig(stem=32), "stacked": multimodal_demo.INPUTS}


@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("fusion", ["early", "late"])
def test_a_packed_mixed_batch_equals_each_item_alone(pools, fusion, inputs):
    image, audio, video = (pools.sets[k][0].data for k in ("image", "audio", "video"))
    items = ["a red circle", image, audio, video, ("moving left", image),
             (image, "a long rising low tone", audio), "a short steady high tone"]
    model = _model(fusion, INPUTS[inputs])
    together = model.embed(items)
    alone = torch.cat([model.embed([item]) for item in items])
    # fp32 sums in another order (packed attention tiles, batched encoders): a few ulps of 1
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=0)
    assert together.shape == (len(items), 16)
    assert torch.allclose(together.norm(dim=-1), torch.ones(len(items)))
    assert model.embed(items, dim=4).shape == (len(items), 4)


def test_inputs_are_checked_by_name():
    model = _model()
    with pytest.raises(TypeError, match="inputs: expected strings or tensors"):
        model.embed([torch.zeros(2, 2)])
    with pytest.raises(TypeError, match="inputs: expected a list"):
        model.embed("a red circle")
    with pytest.raises(ValueError, match="dim: expected None or an int in \\[1, 16\\]"):
        model.embed(["a red circle"], dim=17)
    with pytest.raises(ValueError, match="text: expected words of the caption vocabulary"):
        model.embed(["a purple circle"])
    with pytest.raises(ValueError, match="fusion: expected one of"):
        MultimodalEmbedder(Vocab.for_captions(), fusion="middle")


def _loop_loss(a, b, dims, tau, same):
    """The masked symmetric InfoNCE summed over prefixes, one float64 term at a time."""
    total = 0.0
    n = len(a)
    for k in dims:
        an = [[x / math.sqrt(sum(y * y for y in row[:k])) for x in row[:k]] for row in a]
        bn = [[x / math.sqrt(sum(y * y for y in row[:k])) for x in row[:k]] for row in b]
        cos = [[sum(p * q for p, q in zip(an[i], bn[j])) / tau for j in range(n)]
               for i in range(n)]
        for rows, mask in ((cos, same[0]), ([list(c) for c in zip(*cos)], same[1])):
            for i in range(n):
                kept = [rows[i][j] for j in range(n) if j == i or not mask[i][j]]
                total += 0.5 / n * (math.log(sum(math.exp(x) for x in kept)) - rows[i][i])
    return total


def test_masked_matryoshka_loss_matches_a_float64_loop():
    torch.manual_seed(1)
    a, b = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    same = (torch.rand(5, 5) < 0.4, torch.rand(5, 5) < 0.4)
    got = matryoshka_loss(a, b, (2, 8), temperature=0.1, same=same).item()
    want = _loop_loss(a.tolist(), b.tolist(), (2, 8), 0.1, [m.tolist() for m in same])
    assert got == pytest.approx(want, rel=1e-12)      # float64 both ways, different order
    unmasked = matryoshka_loss(a, b, (2, 8), temperature=0.1).item()
    assert unmasked == pytest.approx(_loop_loss(a.tolist(), b.tolist(), (2, 8), 0.1,
                                                [[[False] * 5] * 5] * 2), rel=1e-12)
    assert got < unmasked                             # masking removes negatives only


def test_recall_matches_brute_force():
    torch.manual_seed(2)
    q, c = torch.randn(30, 6), torch.randn(50, 6)
    correct = torch.rand(30, 50) < 0.05
    for dim in (None, 3):
        got = recall(q, c, correct, dim=dim, ks=(1, 5))
        qn = torch.nn.functional.normalize(q[:, :dim] if dim else q, dim=-1)
        cn = torch.nn.functional.normalize(c[:, :dim] if dim else c, dim=-1)
        for k in (1, 5):
            hits = 0
            for i in range(30):
                scores = [(float(qn[i] @ cn[j]), j) for j in range(50)]
                best = sorted(scores, key=lambda s: -s[0])[:k]
                hits += any(bool(correct[i, j]) for _, j in best)
            assert got[k] == pytest.approx(hits / 30, rel=1e-6)    # an fp32 mean of 0s and 1s
    assert chance(correct) == pytest.approx(correct.float().mean().item())


def test_the_answer_rule_on_hand_checked_cases():
    red_circle = Item(("a red circle",), {"shape": "circle", "colour": "red"})
    video = Item((), {"shape": "circle", "colour": "red", "direction": "left", "speed": "slow"})
    blue_video = Item((), {"shape": "circle", "colour": "blue", "direction": "left"})
    tone = Item((), {"pitch": "low", "sweep": "rising", "duration": "long", "timbre": "sine"})
    square_tone = Item((), {"pitch": "low", "sweep": "rising", "duration": "long",
                            "timbre": "square"})
    tone_text = Item(("a long rising low tone",),
                     {"pitch": "low", "sweep": "rising", "duration": "long"})
    got = answers([red_circle, tone, tone_text], [video, blue_video, tone, square_tone])
    assert got.tolist() == [[True, False, False, False],       # shares shape and colour
                            [False, False, True, False],       # timbre differs: no
                            [False, False, True, True]]        # the text names no timbre


def test_every_pair_kind_is_a_pair_that_answers(pools):
    batch = PairBatches(pools, per_pair=3, seed=0)(5)
    assert len(batch["a"]) == 3 * len(PAIRS)
    assert batch["same"][0].diagonal().all() and batch["same"][1].diagonal().all()
    again = PairBatches(pools, per_pair=3, seed=0)(5)
    assert [i.attributes for i in again["a"]] == [i.attributes for i in batch["a"]]
    counts = dict(zip(PAIRS, range(1, 9)))
    assert len(PairBatches(pools, per_pair=counts, seed=0)(5)["a"]) == sum(counts.values())


@pytest.mark.parametrize("kind", PAIRS)
def test_contrast_pairs_differ_from_their_twin_in_one_stated_attribute(kind):
    pools = Pools(120, seed=3)                       # enough examples for most neighbours
    batch = PairBatches(pools, per_pair=4, seed=1, kinds=(kind,), contrast=0.5)(2)
    found = 0
    for (qa, ta), (qb, tb) in zip(zip(batch["a"][:2], batch["b"][:2]),
                                  zip(batch["a"][2:], batch["b"][2:])):
        changed = [k for k in ta.attributes if ta.attributes[k] != tb.attributes[k]]
        if len(changed) == 1:                        # else no neighbour: a random target
            found += 1
            assert changed[0] in qa.attributes and changed[0] in qb.attributes
            assert not answers([qa], [tb]).item() and not answers([qb], [ta]).item()
    assert found >= 1
    with pytest.raises(ValueError, match="contrast"):
        PairBatches(pools, per_pair=4, seed=1, contrast=0.8)


@pytest.mark.parametrize("kind", ["image", "audio", "video"])
def test_pairs_of_one_kind_change_the_hidden_attribute(kind, many_pools):
    batch = PairBatches(many_pools, per_pair=8, seed=1, kinds=(f"{kind}-{kind}",), contrast=0.5)(2)
    hidden = next(iter(data.HIDDEN[kind]))
    changed = [[k for k in ta.attributes if ta.attributes[k] != tb.attributes[k]]
               for ta, tb in zip(batch["b"][:4], batch["b"][4:])]
    assert changed.count([hidden]) >= 3, changed          # one may have no neighbour


def test_every_evaluation_query_has_an_answer_among_the_candidates():
    pools = Pools(60, seed=5)                       # 30 candidate videos: most triples have none
    for d in directions(pools, 20, 30, seed=0):
        correct = d.correct()
        assert 0 < len(d.queries) <= 20, d.name
        assert correct.any(1).all(), f"{d.name}: {int((~correct.any(1)).sum())} unanswerable"


def test_hidden_directions_judge_only_the_hidden_attribute(pools):
    hidden = [d for d in directions(pools, 5, 12, seed=0) if d.hidden]
    assert [d.hidden for d in hidden] == ["quadrant", "timbre", "speed"]
    for d in hidden:
        assert all(list(q.attributes) == [d.hidden] for q in d.queries)
        values = data.HIDDEN[d.queries[0].parts[0].kind][d.hidden]
        assert 0 < chance(d.correct()) <= 1 and len(values) >= 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_demo_runs_end_to_end_at_a_toy_size(tmp_path, capsys, jobs):
    args = argparse.Namespace(jobs=jobs, threads=1, seed=0, n_train=48, n_eval=24, queries=6, d_embed=32,
                              time_budget=0.5, per_pair=2, lr=2e-3, temperature=0.05,
                              quiet=True, plot=str(tmp_path / "r.png"), cpu_time=False)
    summary = multimodal_demo.run(args)
    json.dumps(summary)
    assert set(summary["recall"]) == {"unified", "full-dim", "late fusion", "text pipeline"}
    assert summary["dims"] == [1, 2, 4, 8, 16, 32]
    assert (tmp_path / "r.png").stat().st_size > 0
    assert "attributes no caption names" in capsys.readouterr().out
