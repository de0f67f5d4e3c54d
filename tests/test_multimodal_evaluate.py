"""The multimodal demo's `evaluate()` scores captions: on a real captioner after one training
step (its own greedy captions, scored here by a per-example loop), and on hand-written
captions of hand-made clips whose scores were worked out by hand."""
import pytest
import torch

from gptcore.multimodal import data, demo
from gptcore.multimodal.captioner import Vocab, caption_item


@pytest.fixture(scope="module")
def one_step_model():
    """The demo's captioner after one AdamW step on a batch of every kind."""
    torch.manual_seed(0)
    model = demo.build(Vocab.for_captions(), "conv", seed=0)
    train_sets = {kind: data.make_dataset(kind, 8, seed=1) for kind in data.MAKERS}
    batch = demo.batches(model, train_sets, 4, seed=0)(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    demo.caption_loss(model, batch).backward()
    optimizer.step()
    return model


def _stated(caption, options):
    """The one word of `options` the caption says, or None (none, or several)."""
    said = [w for w in caption.split() if w in options]
    return said[0] if len(said) == 1 else None


@pytest.mark.parametrize("kind", list(data.MAKERS))
def test_scores_a_one_step_models_own_captions(one_step_model, kind):
    model = one_step_model
    examples = data.make_dataset(kind, 7, seed=5)
    result = demo.evaluate(model, examples, batch_size=3)     # three batches, the last short
    model.eval()
    with torch.no_grad():
        captions = model.caption([caption_item(model.vocab, e, with_caption=False)
                                  for e in examples])
    model.train()
    assert result["n"] == 7
    assert result["exact"] == sum(c == e.caption for c, e in zip(captions, examples)) / 7
    for name, options in data.ATTRIBUTES[kind].items():
        right = sum(_stated(c, options) == e.attributes[name] for c, e in zip(captions, examples))
        assert result[name] == right / 7, name
    assert result["examples"] == [[e.caption, c] for e, c in zip(examples[:3], captions[:3])]
    if kind == "video":
        truth = [e.attributes["direction"] for e in examples]
        said = [_stated(c, data.MOTIONS) for c in captions]
        axis = [(s, t) for s, t in zip(said, truth) if s in (t, demo.REVERSE[t])]
        assert result["order"] == (sum(s == t for s, t in axis) / len(axis) if axis else 0.0)


def _clip(colour, shape, motion):
    verb = motion if motion in ("growing", "shrinking") else f"moving {motion}"
    return data.Example("video", torch.zeros(data.N_FRAMES, 3, data.FRAME_SIZE, data.FRAME_SIZE),
                        f"a {colour} {shape} {verb}",
                        {"shape": shape, "colour": colour, "direction": motion})


def test_hand_checked_scores(one_step_model, monkeypatch):
    clips = [_clip("red", "circle", "left"), _clip("blue", "square", "growing"),
             _clip("green", "cross", "up"), _clip("cyan", "triangle", "down")]
    captions = ["a red circle moving left",          # all right
                "a blue square shrinking",           # direction reversed
                "a red cross moving up up",          # colour wrong; direction said twice: none
                "a cyan circle square moving right"]  # two shapes: none; direction off-axis
    monkeypatch.setattr(one_step_model, "caption", lambda items, **kw: captions[:len(items)])
    result = demo.evaluate(one_step_model, clips)
    assert result["n"] == 4
    assert result["exact"] == 1 / 4                  # clip 1
    assert result["shape"] == 3 / 4                  # clips 1, 2, 3
    assert result["colour"] == 3 / 4                 # clips 1, 2, 4
    assert result["direction"] == 1 / 4              # clip 1
    assert result["order"] == 1 / 2                  # on the true axis: clips 1 (right), 2 (not)
    assert result["examples"] == [[c.caption, p] for c, p in zip(clips[:3], captions[:3])]
