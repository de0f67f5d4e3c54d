"""gptcore.multimodal with the model: encoders and projectors forward and backward, the
audio encoder's packed clips equal clips run alone, packed and padded batches give the same
logits, the temporal projector sees order where frame averaging cannot, and a few training
steps through gptcore.training.train lower the captioning loss."""
import pytest
import torch

import gptcore
from gptcore.multimodal import data
from gptcore.multimodal.captioner import Captioner, CaptionerConfig, Vocab, caption_item
from gptcore.multimodal.encoders import (AudioEncoder, PatchEmbed, StackedVideoEncoder,
                                         TemporalProjector, VideoEncoder, ViT, grid_pool)
from gptcore.multimodal.inputs import InputEncoders, middle_frame
from gptcore.multimodal.projector import CellLinear, Projector
from gptcore.multimodal.splice import IGNORE, splice, to_padded


def _check_backward(module, out, *inputs):
    out.square().mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for x in inputs:
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_patch_embed_is_a_conv_over_patches():
    torch.manual_seed(0)
    embed = PatchEmbed(4, 5, channels=3)
    images = torch.randn(2, 3, 8, 12)
    tokens = embed(images)                                          # (2, 6, 5)
    assert tokens.shape == (2, 6, 5)
    # token (row 1, column 2) is the linear map of that 4x4 patch, independently computed
    patch = images[:, :, 4:8, 8:12].reshape(2, -1)
    expected = patch @ embed.proj.weight.reshape(5, -1).T + embed.proj.bias
    torch.testing.assert_close(tokens[:, 1 * 3 + 2], expected)     # fp32 sums of 48 products
    with pytest.raises(ValueError, match="images"):
        embed(torch.randn(1, 3, 8, 10))


@pytest.mark.parametrize("cls_token, stem", [(False, 0), (True, 8)])
def test_vit_forward_backward(cls_token, stem):
    torch.manual_seed(0)
    vit = ViT(8, 4, 16, 2, 2, cls_token=cls_token, stem=stem)
    images = torch.randn(3, 3, 8, 8, requires_grad=True)
    out = vit(images)
    assert out.shape == (3, 4 + cls_token, 16)
    _check_backward(vit, out, images)


def test_vit_attention_is_bidirectional():
    """Changing the last patch changes the first token's output (causal attention would not)."""
    torch.manual_seed(0)
    vit = ViT(8, 4, 16, 1, 2)
    a = torch.randn(1, 3, 8, 8)
    b = a.clone()
    b[..., 4:, 4:] += 1.0
    assert not torch.allclose(vit(a)[0, 0], vit(b)[0, 0])


def test_audio_encoder_packed_equals_each_clip_alone():
    torch.manual_seed(0)
    enc = AudioEncoder(6, 16, 2, 2, max_tokens=8)
    clips = [torch.randn(n, 6, requires_grad=True) for n in (7, 1, 12)]
    tokens, counts = enc(clips)
    assert counts == [4, 1, 6] and tokens.shape == (11, 16)
    alone = torch.cat([enc([c])[0] for c in clips])
    torch.testing.assert_close(tokens, alone, rtol=1e-5, atol=1e-5)   # same math, other batching
    _check_backward(enc, tokens, *clips)
    with pytest.raises(ValueError, match="mels"):
        enc([torch.randn(17, 6)])


@pytest.mark.parametrize("mixing", ["conv", "mean"])
def test_video_encoder_forward_backward(mixing):
    torch.manual_seed(0)
    frames = ViT(8, 4, 16, 1, 2)
    enc = VideoEncoder(frames, TemporalProjector(16, frames.grid, 1, mixing))
    videos = torch.randn(2, 5, 3, 8, 8, requires_grad=True)
    out = enc(videos)
    assert out.shape == (2, 1, 16)
    _check_backward(enc, out, videos)


def test_temporal_projector_sees_order_frame_averaging_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 8)                                     # (B, F, N, d), 2x2 grid
    reverse = x.flip(1)
    mean = TemporalProjector(8, 2, 2, "mean")
    torch.testing.assert_close(mean(x), mean(reverse))             # a mean ignores order
    torch.testing.assert_close(mean(x), x.mean(1))                 # pool=grid: tokens kept
    conv = TemporalProjector(8, 2, 1, "conv")
    assert (conv(x) - conv(reverse)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="tokens per frame"):
        conv(torch.randn(1, 3, 5, 8))


@pytest.mark.parametrize("grid, pool", [(4, 2), (5, 2), (6, 4), (3, 3), (1, 1), (6, 1)])
def test_grid_pool_is_the_mean_over_each_cell(grid, pool):
    """Against a loop over cells; adaptive pooling's cell i spans rows floor(i*g/p) to
    ceil((i+1)*g/p), so cells overlap when pool does not divide grid (5 -> 2)."""
    torch.manual_seed(0)
    tokens = torch.randn(2, grid * grid, 3, dtype=torch.float64)
    got = grid_pool(tokens, grid, pool)
    assert got.shape == (2, pool * pool, 3)
    cells = tokens.view(2, grid, grid, 3)
    span = [(i * grid // pool, -(-(i + 1) * grid // pool)) for i in range(pool)]
    for r, (r0, r1) in enumerate(span):
        for c, (c0, c1) in enumerate(span):
            want = cells[:, r0:r1, c0:c1].mean(dim=(1, 2))
            diff = (got[:, r * pool + c] - want).abs().max().item()
            assert diff < 1e-12, f"cell ({r}, {c}): max difference {diff}"   # float64 means


@pytest.mark.parametrize("stem", [0, 8])
def test_stacked_video_encoder_is_one_vit_over_the_frames_as_channels(stem):
    """Against a loop over clips: frame t's channel c is input channel 3t + c."""
    torch.manual_seed(0)
    clip = ViT(8, 4, 16, 1, 2, channels=5 * 3, stem=stem, pixel_mean=0.2, pixel_std=0.5)
    enc = StackedVideoEncoder(clip, pool=1)
    videos = torch.randn(2, 5, 3, 8, 8, requires_grad=True)
    out = enc(videos)
    assert out.shape == (2, 1, 16)
    by_hand = torch.stack([clip(torch.cat(list(video), dim=0)[None]).mean(1)   # pool 1: the mean
                           for video in videos])                               # of the 2x2 grid
    torch.testing.assert_close(out, by_hand)       # the same ops batched: fp32 rounding
    assert (enc(videos.flip(1)) - out).abs().max() > 1e-3        # the frames' order is seen
    _check_backward(enc, out, videos)
    with pytest.raises(ValueError, match="pool"):
        StackedVideoEncoder(clip, pool=3)


@pytest.mark.parametrize("image_pool", [0, 1, 3])
def test_pooled_image_tokens_are_the_vit_tokens_pooled(image_pool):
    torch.manual_seed(0)
    config = CaptionerConfig(d_enc=16, enc_layers=1, enc_heads=2, image_pool=image_pool,
                             temporal="stack", video_pool=1)
    inputs = InputEncoders(config, d_model=8)
    images = [data.make_image(torch.Generator().manual_seed(i)).data for i in range(3)]
    tokens = inputs({"image": images})["image"]
    grid = inputs.encoders["image"].grid
    n = inputs.n_tokens("image", images[0])
    assert n == (image_pool or grid) ** 2 and tokens.shape == (3 * n, 8)
    vit_tokens = inputs.encoders["image"](torch.stack(images))                # (3, g*g, 16)
    want = grid_pool(vit_tokens, grid, image_pool) if image_pool else vit_tokens
    torch.testing.assert_close(tokens, inputs.projectors["image"](want).flatten(0, 1))
    video = data.make_video(torch.Generator().manual_seed(0)).data
    assert inputs({"video": [video]})["video"].shape == (1, 8)
    with pytest.raises(ValueError, match="image_pool"):
        InputEncoders(CaptionerConfig(image_pool=grid + 1), d_model=8)


@pytest.mark.parametrize("cell_projector", [False, True])
def test_a_video_with_its_still_is_its_clip_tokens_then_its_middle_frame_as_an_image(
        cell_projector):
    torch.manual_seed(0)
    config = CaptionerConfig(d_enc=16, enc_layers=1, enc_heads=2, image_pool=2, temporal="stack",
                             video_pool=2, video_still=True, cell_projector=cell_projector)
    inputs = InputEncoders(config, d_model=8)
    videos = [data.make_video(torch.Generator().manual_seed(i)).data for i in range(3)]
    tokens = inputs({"video": videos})["video"]
    assert inputs.n_tokens("video", videos[0]) == 8 and tokens.shape == (3 * 8, 8)
    clips = torch.stack(videos)
    clip_tokens = inputs.projectors["video"](inputs.encoders["video"](clips).flatten(0, 1))
    stills = inputs({"image": list(middle_frame(clips))})["image"]
    by_hand = torch.cat((clip_tokens.view(3, 4, 8), stills.view(3, 4, 8)), dim=1).flatten(0, 1)
    torch.testing.assert_close(tokens, by_hand, atol=0, rtol=0)     # the same ops, same order
    numbered = torch.arange(8.0).view(1, 8, 1, 1, 1).expand(2, 8, 3, 16, 16)   # frame i: all i
    still = middle_frame(numbered)
    assert still.shape == (2, 3, data.IMAGE_SIZE, data.IMAGE_SIZE) and (still == 4).all()


@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu"])
def test_projector_forward_backward(kind):
    torch.manual_seed(0)
    proj = Projector(kind, 12, 20)
    x = torch.randn(3, 5, 12, requires_grad=True)
    out = proj(x)
    assert out.shape == (3, 5, 20)
    _check_backward(proj, out, x)
    assert len(list(proj.parameters())) == (2 if kind == "linear" else 4)
    with pytest.raises(ValueError, match="kind"):
        Projector("mlp3x", 12, 20)


@pytest.mark.parametrize("cells,n", [(1, 3), (4, 3), (4, 1), (9, 2), (4, 0)])
def test_cell_linear_matches_a_loop_over_cells(cells, n):
    torch.manual_seed(0)
    layer = CellLinear(cells, 5, 7)
    x = torch.randn(n * cells, 5, dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    out = layer(x)
    by_hand = torch.stack([x[i] @ layer.weight[i % cells] + layer.bias[i % cells]
                           for i in range(n * cells)]) if n else x.new_zeros(0, 7)
    torch.testing.assert_close(out, by_hand)       # float64: the same products, other order
    if n:
        grads = torch.autograd.grad(out.square().sum(), (x, layer.weight, layer.bias))
        want = torch.autograd.grad(by_hand.square().sum(), (x, layer.weight, layer.bias))
        for got, ref in zip(grads, want):
            torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="cells"):
        CellLinear(4, 5, 7)(torch.randn(6, 5))


def test_a_cell_projector_keeps_the_place_through_a_mean():
    torch.manual_seed(0)
    content, background = torch.randn(16), torch.randn(16)
    grids = [torch.stack([content if c == place else background for c in range(4)])
             for place in range(4)]                                          # (4 cells, 16)
    for cells, distinct in ((1, False), (4, True)):
        proj = Projector("mlp2x_gelu", 16, 8, cells)
        means = [proj(g).mean(0) for g in grids]
        gaps = [(means[0] - m).abs().max().item() for m in means[1:]]
        # one map for all cells: the same four tokens in another order, the same mean (fp32)
        assert (min(gaps) > 1e-3) if distinct else (max(gaps) < 1e-6), (cells, gaps)


def _tiny_gpt(vocab_size, d_model=32):
    cfg = gptcore.GPTConfig.preset("names", vocab_size=vocab_size, n_layer=2, d_model=d_model,
                                   n_head=2, d_ff=48, block_size=64)
    return gptcore.GPT(cfg)


def test_packed_and_padded_batches_give_the_same_logits():
    torch.manual_seed(0)
    gpt = _tiny_gpt(20)
    ph = {"image": 17, "audio": 18, "video": 19}
    token_ids = [[1, 17, 3, 4, 5], [2, 18, 6, 17, 7, 8, 9, 10], [11], [19, 12, 13]]
    inputs = [[("image", torch.randn(5, 32))],
              [("audio", torch.randn(3, 32)), ("image", torch.randn(5, 32))],
              [], [("video", torch.randn(2, 32))]]
    packed = splice(token_ids, inputs, ph, gpt.wte)
    plan = packed.layout
    logits, loss = gpt(inputs_embeds=packed.inputs_embeds, targets=plan.targets,
                       cu_seqlens=plan.cu_seqlens, max_seqlen=plan.max_seqlen)
    embeds, targets, mask = to_padded(packed)
    padded_logits, padded_loss = gpt(inputs_embeds=embeds, targets=targets)
    # the same sums in another order (varlen vs batched attention kernels)
    torch.testing.assert_close(logits, padded_logits[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, padded_loss, rtol=1e-5, atol=1e-6)
    assert (plan.targets != IGNORE).sum() == 3 + 5 + 0 + 2      # text after text or an input


def _tiny_captioner(temporal="conv"):
    vocab = Vocab.for_captions()
    config = CaptionerConfig(d_enc=16, enc_layers=1, enc_heads=2, temporal=temporal)
    return Captioner(_tiny_gpt(len(vocab)), vocab, config)


def test_captioner_batch_mixes_kinds_and_captions_decode():
    torch.manual_seed(0)
    model = _tiny_captioner()
    examples = [data.make_dataset(kind, 2, seed=1)[i] for kind in data.MAKERS for i in range(2)]
    batch = model.collate([caption_item(model.vocab, e) for e in examples])
    counts = [c for seq in batch["counts"] for c in seq]
    audio_tokens = [{"short": 16, "long": 32}[e.attributes["duration"]] for e in examples[2:4]]
    assert counts == [36, 36] + audio_tokens + [4, 4]          # 6x6 patches, frames / 2, 2x2
    logits, loss = model(batch)
    assert logits.shape == (batch["layout"].source.shape[0], len(model.vocab))
    loss.backward()
    for part in (model.gpt, model.inputs.encoders, model.inputs.projectors):
        assert all(p.grad is not None for p in part.parameters()), part
    captions = model.caption([caption_item(model.vocab, e, with_caption=False) for e in examples],
                             max_words=3)
    assert len(captions) == 6 and all(len(c.split()) <= 3 for c in captions)


def test_a_few_training_steps_lower_the_loss():
    from gptcore.multimodal.demo import batches, caption_loss
    from gptcore.training.config import TrainConfig
    from gptcore.training.objective import Objective, evaluate
    from gptcore.training.train import train
    torch.manual_seed(0)
    model = _tiny_captioner()
    sets = {kind: data.make_dataset(kind, 8, seed=2) for kind in data.MAKERS}
    get = batches(model, sets, per_kind=4, seed=0)
    fixed = [get(10_000 + i) for i in range(2)]
    before = evaluate(model, fixed, loss_fn=caption_loss)
    train(model, get, TrainConfig(steps=25, lr=3e-3), objective=Objective(caption_loss),
          progress=False)
    after = evaluate(model, fixed, loss_fn=caption_loss)
    assert after < 0.7 * before, (before, after)


def test_batches_take_the_given_count_of_each_kind():
    from gptcore.multimodal.demo import batches
    model = _tiny_captioner()
    sets = {kind: data.make_dataset(kind, 8, seed=2) for kind in data.MAKERS}
    batch = batches(model, sets, per_kind={"image": 1, "audio": 2, "video": 3}, seed=0)(0)
    assert {k: len(f) for k, f in batch["features"].items()} == {"image": 1, "audio": 2, "video": 3}
    batch = batches(model, {"video": sets["video"]}, per_kind={"video": 2}, seed=0)(0)
    assert len(batch["features"]["video"]) == 2 and not batch["features"]["image"]


def test_llava_stage_one_trains_only_the_projectors():
    model = _tiny_captioner()
    model.set_trainable(gpt=False, encoders=False)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projectors"} and not model.gpt.wte.weight.requires_grad
    model.set_trainable()
    assert all(p.requires_grad for p in model.parameters())


def test_vit_standardises_pixels_before_the_stem():
    torch.manual_seed(0)
    plain = ViT(8, 4, 16, 1, 2, stem=8)
    standardising = ViT(8, 4, 16, 1, 2, stem=8, pixel_mean=0.17, pixel_std=0.22)
    standardising.load_state_dict(plain.state_dict())
    images = torch.rand(3, 3, 8, 8)
    # the same float ops on the same inputs: equal but for the rounding of the subtraction
    torch.testing.assert_close(standardising(images), plain((images - 0.17) / 0.22),
                               rtol=1e-5, atol=1e-6)
    assert not torch.allclose(standardising(images), plain(images), atol=1e-3)


def test_train_lr_scales_per_parameter_group():
    from gptcore.multimodal.demo import batches, caption_loss
    from gptcore.training.config import TrainConfig
    from gptcore.training.objective import Objective
    from gptcore.training.train import make_optimizer, train
    torch.manual_seed(0)
    model = _tiny_captioner()
    assert len(make_optimizer(model, 1e-3, (0.9, 0.95), 1e-8, 0.0).param_groups) == 2
    groups = make_optimizer(model, 1e-3, (0.9, 0.95), 1e-8, 0.0, {"gpt.": 0.5}).param_groups
    assert sorted((g["lr_scale"], g["lr"]) for g in groups) == [(0.5, 5e-4)] * 2 + [(1.0, 1e-3)] * 2
    gpt_before = [p.detach().clone() for p in model.gpt.parameters()]
    enc_before = [p.detach().clone() for p in model.inputs.encoders.parameters()]
    sets = {kind: data.make_dataset(kind, 4, seed=3) for kind in data.MAKERS}
    train(model, batches(model, sets, per_kind=2, seed=0),
          TrainConfig(steps=3, lr=3e-3, lr_scales={"gpt.": 0.0}), objective=Objective(caption_loss),
          progress=False)
    assert all(torch.equal(a, p) for a, p in zip(gpt_before, model.gpt.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(enc_before, model.inputs.encoders.parameters()))


def test_greedy_captions_never_emit_bos_or_placeholders():
    torch.manual_seed(0)
    model = _tiny_captioner()
    vocab, forward = model.vocab, model.gpt.forward
    favoured = torch.zeros(len(vocab))
    favoured[[vocab.bos, *vocab.placeholders.values()]] = 100.0
    favoured[vocab.stoi["red"]] = 50.0

    def biased(*args, **kwargs):
        logits, loss = forward(*args, **kwargs)
        return logits + favoured, loss
    model.gpt.forward = biased
    examples = [data.make_dataset(kind, 1, seed=4)[0] for kind in data.MAKERS]
    captions = model.caption([caption_item(vocab, e, with_caption=False) for e in examples],
                             max_words=3)
    assert captions == ["red red red"] * 3
