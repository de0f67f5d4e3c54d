"""The three input encoders with their projectors (image: ViT; audio: log-mel + AudioEncoder;
video: ViT per frame + TemporalProjector, or one ViT over the stacked frames, and optionally the
middle frame through the image encoder), shared by the captioner and the multimodal embedder:
raw inputs -> the projected tokens a gptcore trunk reads in place of text embeddings."""
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.multimodal import data, mel
from gptcore.multimodal.encoders import (AudioEncoder, StackedVideoEncoder, TemporalProjector,
                                         VideoEncoder, ViT, grid_pool)
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
        max_audio_tokens = mel_frames(max(data.DURATIONS.values()), c.hop) // 2 + 1
        image = ViT(data.IMAGE_SIZE, c.patch, c.d_enc, c.enc_layers, c.enc_heads, **pixels)
        if not 0 <= c.image_pool <= image.grid:
            raise ValueError(f"image_pool: expected 0 (no pooling) to grid={image.grid}, got "
                             f"{c.image_pool}")
        self.encoders = nn.ModuleDict({
            "image": image,
            "audio": AudioEncoder(c.n_mels, c.d_enc, c.enc_layers, c.enc_heads, max_audio_tokens),
            "video": video_encoder(c, pixels)})
        cells = {"image": self.image_tokens() if c.cell_projector else 1,
                 "audio": 1, "video": c.video_pool ** 2 if c.cell_projector else 1}
        self.projectors = nn.ModuleDict({kind: Projector(c.projector, c.d_enc, d_model,
                                                         cells[kind])
                                         for kind in self.encoders})
        self.register_buffer("filterbank", mel.mel_filterbank(c.n_mels, c.n_fft, data.SAMPLE_RATE),
                             persistent=False)

    def image_tokens(self):
        return (self.config.image_pool or self.encoders["image"].grid) ** 2

    def features(self, kind, raw):
        """What the encoder of `kind` reads: images and videos as they are; log-mel frames
        (frames, n_mels) for audio."""
        if kind == "audio":
            return mel.log_mel(raw, self.filterbank, self.config.n_fft, self.config.hop)
        return raw

    def n_tokens(self, kind, features):
        if kind == "image":
            return self.image_tokens()
        if kind == "audio":
            return (features.shape[0] + 1) // 2
        return self.config.video_pool ** 2 + (self.image_tokens() if self.config.video_still else 0)

    def forward(self, features_by_kind):
        """{kind: list of features} -> {kind: projected tokens (sum n, d_model)}."""
        out = {}
        for kind, feats in features_by_kind.items():
            if not feats:
                continue
            if kind == "audio":
                tokens, _ = self.encoders[kind](feats)                 # (sum n, d_enc)
                out[kind] = self.projectors[kind](tokens)              # (sum n, d_model)
            elif kind == "image":
                out[kind] = self.image(torch.stack(feats)).flatten(0, 1)
            else:
                videos = torch.stack(feats)                            # (B, F, 3, H, W)
                tokens = self.projectors[kind](self.encoders[kind](videos).flatten(0, 1))
                if self.config.video_still:
                    tokens = torch.cat((tokens.view(len(feats), -1, tokens.shape[-1]),
                                        self.image(middle_frame(videos))), dim=1).flatten(0, 1)
                out[kind] = tokens                                     # (sum n, d_model)
        return out

    def image(self, images):
        """images (B, 3, IMAGE_SIZE, IMAGE_SIZE) -> projected tokens (B, P, d_model): the ViT,
        its grid pooled to image_pool x image_pool (when set), the image projector."""
        vit = self.encoders["image"]
        tokens = vit(images)                                           # (B, g*g, d_enc)
        if self.config.image_pool:
            tokens = grid_pool(tokens, vit.grid, self.config.image_pool)
        return self.projectors["image"](tokens.flatten(0, 1)).view(len(images), tokens.shape[1], -1)


def middle_frame(videos):
    """videos (B, F, 3, FRAME_SIZE, FRAME_SIZE) -> their middle frames resized to the images'
    size (B, 3, IMAGE_SIZE, IMAGE_SIZE), bilinear: what the image encoder reads of a clip."""
    frames = videos[:, videos.shape[1] // 2]
    return F.interpolate(frames, size=data.IMAGE_SIZE, mode="bilinear", align_corners=False)


def video_encoder(c, pixels):
    """The video encoder a CaptionerConfig names: temporal "conv" or "mean", a ViT per frame and a
    TemporalProjector; "stack", one ViT over the frames stacked as channels."""
    if c.temporal == "stack":
        clip = ViT(data.FRAME_SIZE, c.patch, c.d_enc, c.enc_layers, c.enc_heads,
                   channels=3 * data.N_FRAMES, **pixels)
        return StackedVideoEncoder(clip, c.video_pool)
    frame_encoder = ViT(data.FRAME_SIZE, c.patch, c.d_enc, c.enc_layers, c.enc_heads, **pixels)
    temporal = TemporalProjector(c.d_enc, frame_encoder.grid, c.video_pool, c.temporal)
    return VideoEncoder(frame_encoder, temporal)
