"""gptcore.multimodal without a model: the generated data, the mel features (against a direct
DFT and a scalar transcription of the filterbank), and splicing (positions, order, labels)."""
import math

import pytest
import torch

from gptcore.multimodal import data, mel
from gptcore.multimodal.splice import IGNORE, layout, splice, to_padded


@pytest.mark.parametrize("kind", ["image", "audio", "video"])
def test_data_is_deterministic_and_captioned(kind):
    a, b = data.make_dataset(kind, 6, seed=3), data.make_dataset(kind, 6, seed=3)
    assert all(torch.equal(x.data, y.data) and x.caption == y.caption for x, y in zip(a, b))
    c = data.make_dataset(kind, 6, seed=4)
    assert any(not torch.equal(x.data, y.data) for x, y in zip(a, c))
    for example in a:
        assert data.parse_caption(kind, example.caption) == example.attributes


def _shape_pixels(frame):
    return (frame - 0.1).abs().sum(0) > 0.3                       # (H, W): not background


@pytest.mark.parametrize("direction, axis, sign", [("right", 1, 1), ("left", 1, -1),
                                                    ("down", 0, 1), ("up", 0, -1)])
def test_video_moves_in_the_captioned_direction(direction, axis, sign):
    gen = torch.Generator().manual_seed(0)
    clip = next(c for c in (data.make_video(gen, noise=0.0) for _ in range(200))
                if c.attributes["direction"] == direction)
    centres = [_shape_pixels(f).nonzero()[:, axis].float().mean().item() for f in clip.data]
    assert all(sign * (b - a) > 0 for a, b in zip(centres, centres[1:])), centres


@pytest.mark.parametrize("direction, sign", [("growing", 1), ("shrinking", -1)])
def test_video_grows_or_shrinks(direction, sign):
    gen = torch.Generator().manual_seed(1)
    clip = next(c for c in (data.make_video(gen, noise=0.0) for _ in range(200))
                if c.attributes["direction"] == direction)
    areas = [_shape_pixels(f).sum().item() for f in clip.data]
    assert sign * (areas[-1] - areas[0]) > 0 and areas[0] > 0, areas


def _mel_scalar(hz):
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _hz_scalar(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@pytest.mark.parametrize("n_mels, n_fft, rate, f_min", [(32, 256, 8000, 0.0), (7, 64, 16000, 300.0),
                                                       (1, 16, 8000, 0.0)])
def test_mel_filterbank_matches_scalar_transcription(n_mels, n_fft, rate, f_min):
    fb = mel.mel_filterbank(n_mels, n_fft, rate, f_min=f_min)
    lo, hi = _mel_scalar(f_min), _mel_scalar(rate / 2)
    points = [_hz_scalar(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    for m in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * rate / n_fft
            left, centre, right = points[m], points[m + 1], points[m + 2]
            if left < f <= centre:
                expected = (f - left) / (centre - left)
            elif centre < f < right:
                expected = (right - f) / (right - centre)
            else:
                expected = 0.0
            # float32 output of a float64 computation
            assert abs(fb[m, k].item() - expected) < 1e-6, (m, k, fb[m, k].item(), expected)


def test_log_mel_matches_direct_dft():
    n_fft, hop, rate = 64, 16, 8000
    fb = mel.mel_filterbank(10, n_fft, rate)
    wave = torch.randn(2, 200, generator=torch.Generator().manual_seed(0))
    got = mel.log_mel(wave, fb, n_fft, hop)                        # (2, frames, 10)
    assert got.shape == (2, 200 // hop + 1, 10)
    padded = torch.nn.functional.pad(wave[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    n = torch.arange(n_fft, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)      # periodic Hann
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft         # (F, n_fft)
    for b in range(2):
        for t in range(got.shape[1]):
            frame = padded[b, t * hop:t * hop + n_fft].double() * window
            power = (angle.cos() @ frame) ** 2 + (angle.sin() @ frame) ** 2
            expected = torch.log(fb.double() @ power + 1e-6)
            # float32 FFT against a float64 DFT; log energies are O(1..10)
            torch.testing.assert_close(got[b, t].double(), expected, rtol=1e-4, atol=1e-4)


def test_log_mel_puts_a_tone_in_its_band():
    rate, n_fft = 8000, 256
    fb = mel.mel_filterbank(32, n_fft, rate)
    t = torch.arange(4000) / rate
    for hz in (300.0, 1500.0):
        feats = mel.log_mel(torch.sin(2 * math.pi * hz * t), fb, n_fft, 64)
        band = feats.mean(0).argmax().item()
        assert fb[band, round(hz * n_fft / rate)] > 0.3, (hz, band)


def test_log_mel_rejects_short_waves():
    with pytest.raises(ValueError, match="wave"):
        mel.log_mel(torch.zeros(10), mel.mel_filterbank(4, 64, 8000), 64, 16)


PH = {"image": 100, "audio": 101, "video": 102}


def _embed_table(vocab=103, d=4):
    return torch.nn.Embedding(vocab, d)


def test_splice_positions_order_and_labels():
    table = _embed_table()
    img1, img2 = torch.randn(3, 4), torch.randn(2, 4)
    aud = torch.randn(1, 4, requires_grad=True)
    token_ids = [[1, PH["image"], 5, PH["audio"], PH["image"], 6],   # two kinds, three inputs
                 [2, 7, 8],                                          # no input
                 [PH["video"]]]                                      # only an input
    vid = torch.randn(4, 4)
    inputs = [[("image", img1), ("audio", aud), ("image", img2)], [], [("video", vid)]]
    packed = splice(token_ids, inputs, PH, table)
    e = table.weight
    expected = torch.cat([e[[1]], img1, e[[5]], aud, img2, e[[6]], e[[2, 7, 8]], vid])
    assert torch.equal(packed.inputs_embeds, expected)
    plan = packed.layout
    assert plan.cu_seqlens.tolist() == [0, 9, 12, 16]
    assert plan.cu_seqlens.dtype == torch.int32 and plan.max_seqlen == 9
    I = IGNORE
    assert plan.labels.tolist() == [1, I, I, I, 5, I, I, I, 6, 2, 7, 8, I, I, I, I]
    assert plan.targets.tolist() == [I, I, I, 5, I, I, I, 6, I, 7, 8, I, I, I, I, I]
    assert plan.is_input.tolist() == [lab == I for lab in plan.labels.tolist()]
    packed.inputs_embeds.sum().backward()                         # gradients reach the inputs
    assert torch.equal(aud.grad, torch.ones_like(aud))


def test_splice_rejects_mismatched_inputs():
    table = _embed_table()
    with pytest.raises(ValueError, match=r"input_kinds\[0\]"):
        splice([[PH["image"], PH["audio"]]], [[("audio", torch.randn(1, 4)),
                                               ("image", torch.randn(1, 4))]], PH, table)
    with pytest.raises(ValueError, match=r"input_kinds\[0\]"):
        splice([[PH["image"]]], [[]], PH, table)
    with pytest.raises(ValueError, match="one list per sequence"):
        layout([[1]], [[], []], [[]], PH)
    with pytest.raises(ValueError, match="one list per sequence"):
        splice([[1], [2]], [[]], PH, table)


def test_layout_needs_only_counts():
    """The layout from token counts alone equals the one splice builds from the tensors."""
    token_ids = [[PH["audio"], 4, PH["audio"]], [PH["image"], 9]]
    plan = layout(token_ids, [["audio", "audio"], ["image"]], [[2, 3], [1]], PH)
    # rows: 5 text ids, then the image block (1 row: 5), then the audio block (5 rows: 6..10)
    assert plan.source.tolist() == [6, 7, 1, 8, 9, 10, 5, 4]
    assert plan.lengths == [6, 2]


def test_to_padded_round_trip():
    table = _embed_table()
    packed = splice([[1, PH["image"], 2], [3]], [[("image", torch.randn(2, 4))], []], PH, table)
    embeds, targets, mask = to_padded(packed)
    assert embeds.shape == (2, 4, 4) and mask.tolist() == [[True] * 4, [True, False, False, False]]
    assert torch.equal(embeds[mask], packed.inputs_embeds)
    assert torch.equal(targets[mask], packed.layout.targets) and (targets[~mask] == IGNORE).all()
    assert (embeds[~mask] == 0).all()
