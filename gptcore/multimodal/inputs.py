"""The three input encoders with their projectors (image: ViT; audio: log-mel + AudioEncoder;
video: ViT per frame + TemporalProjector), shared by the captioner and the multimodal embedder:
raw inputs -> the projected tokens a gptcore trunk reads in place of text embeddings."""
import torch
from torch import nn

from gptcore.multimodal import data, mel
from gptcore.multimodal.encoders import AudioEncoder, TemporalProjector, VideoEncoder, ViT
from gptcore.multimodal.projector import Projector


def mel_frames(seconds, hop):
    return int(seconds * data.SAMPLE_RATE) // hop + 1


class InputEncoders(nn.Module):
    """config: a CaptionerConfig (encoder widths, patches, mel settings, pooling); d_model: the
    trunk's width the projectors map to."""

    def __init__(self, config, d_model):
        super().__init__()
        self.config = c = config
        pixels = {"stem": c.stem, "pixel_mean": c.pixel_mean, "pixel_std": c.pixel_std}
        frame_encoder = ViT(data.FRAME_SIZE, c.patch, c.d_enc, c.enc_layers, c.enc_heads, **pixels)
        temporal = TemporalProjector(c.d_enc, frame_encoder.grid, c.video_pool, c.temporal)
        max_audio_tokens = mel_frames(max(data.DURATIONS.values()), c.hop) // 2 + 1
        self.encoders = nn.ModuleDict({
            "image": ViT(data.IMAGE_SIZE, c.patch, c.d_enc, c.enc_layers, c.enc_heads, **pixels),
            "audio": AudioEncoder(c.n_mels, c.d_enc, c.enc_layers, c.enc_heads, max_audio_tokens),
            "video": VideoEncoder(frame_encoder, temporal)})
        self.projectors = nn.ModuleDict({kind: Projector(c.projector, c.d_enc, d_model)
                                         for kind in self.encoders})
        self.register_buffer("filterbank", mel.mel_filterbank(c.n_mels, c.n_fft, data.SAMPLE_RATE),
                             persistent=False)

    def features(self, kind, raw):
        """What the encoder of `kind` reads: images and videos as they are; log-mel frames
        (frames, n_mels) for audio."""
        if kind == "audio":
            return mel.log_mel(raw, self.filterbank, self.config.n_fft, self.config.hop)
        return raw

    def n_tokens(self, kind, features):
        if kind == "image":
            return self.encoders["image"].grid ** 2
        if kind == "audio":
            return (features.shape[0] + 1) // 2
        return self.config.video_pool ** 2

    def forward(self, features_by_kind):
        """{kind: list of features} -> {kind: projected tokens (sum n, d_model)}."""
        out = {}
        for kind, feats in features_by_kind.items():
            if not feats:
                continue
            if kind == "audio":
                tokens, _ = self.encoders[kind](feats)                 # (sum n, d_enc)
            else:
                tokens = self.encoders[kind](torch.stack(feats)).flatten(0, 1)
            out[kind] = self.projectors[kind](tokens)                  # (sum n, d_model)
        return out
