"""Encoders that turn images, sounds and videos into token sequences, built from gptcore.nn
blocks with bidirectional attention (causal=False): a ViT over conv patches, an audio encoder
over log-mel frames (conv1d stem, as Whisper), and two video encoders: the ViT per frame, then a
TemporalProjector that mixes across frames and pools (as NVIDIA STORM), or one ViT over the
frames stacked as channels (early fusion in time, Karpathy et al. 2014)."""
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.nn import MLP, Attention, Block, RMSNorm, packed_positions
from gptcore.ops import packing


def encoder_block(d_model, n_heads):
    """A pre-norm transformer block with bidirectional attention and a GELU MLP (4x). Its
    matrices start ~N(0, 0.02) as ViT's and the GPT's do: with torch's default init a shape
    classifier over a 2-block ViT sat at chance for 200 steps (lr 3e-3) while one over the
    stem alone reached 98%."""
    attn = Attention(d_model, n_heads, causal=False, rope_theta=None)
    block = Block(attn, MLP(d_model, 4 * d_model, "gelu"), RMSNorm(d_model), RMSNorm(d_model))
    for module in block.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
    return block


class PatchEmbed(nn.Module):
    """images (B, C, H, W) -> patch tokens (B, (H/p)(W/p), d), row-major over the patch grid:
    a conv whose kernel and stride are the patch size (ViT)."""

    def __init__(self, patch, d_model, channels=3):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, d_model, patch, stride=patch)

    def forward(self, images):
        if images.dim() != 4 or images.shape[-1] % self.patch or images.shape[-2] % self.patch:
            raise ValueError(f"images: expected (B, C, H, W) with H and W multiples of "
                             f"patch={self.patch}, got {tuple(images.shape)}")
        return self.proj(images).flatten(2).transpose(1, 2)          # (B, N, d)


class ConvStem(nn.Module):
    """images (B, C, H, W) -> (B, width, H/2, W/2): conv3x3, GELU, 2x2 max pool, conv3x3, GELU
    ("early convolutions help transformers see better", Xiao et al. 2021)."""

    def __init__(self, channels, width):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
                                 nn.MaxPool2d(2), nn.Conv2d(width, width, 3, padding=1), nn.GELU())

    def forward(self, images):
        return self.net(images)


class ViT(nn.Module):
    """images (B, C, H, W) -> (B, N [+1], d): patch tokens plus learned positions through
    bidirectional blocks; `cls_token=True` prepends a learned [CLS] token. stem > 0 puts a
    ConvStem of that width before the patches (which then cover patch/2 of its pixels, so the
    tokens still cover `patch` image pixels). Pixels are standardised first, (x - pixel_mean) /
    pixel_std: on raw pixels in [0, 1] 84% of the (random-init) encoder's output was common to
    all images (its between-image std / rms was 0.16; 0.43 standardised), and a captioner
    learned colour in 250 steps instead of 50 and shape not at all (docs/multimodal.md)."""

    def __init__(self, image_size, patch, d_model, n_layers, n_heads, channels=3, cls_token=False,
                 stem=0, pixel_mean=0.0, pixel_std=1.0):
        super().__init__()
        if image_size % patch or (stem and patch % 2):
            raise ValueError(f"patch: expected a divisor of image_size={image_size} (even with a "
                             f"stem), got {patch}")
        self.grid = image_size // patch
        self.stem = ConvStem(channels, stem) if stem else nn.Identity()
        self.embed = (PatchEmbed(patch // 2, d_model, stem) if stem
                      else PatchEmbed(patch, d_model, channels))
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if cls_token else None
        n_tokens = self.grid * self.grid + (1 if cls_token else 0)
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens, d_model))
        self.blocks = nn.ModuleList(encoder_block(d_model, n_heads) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.d_model = d_model
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std

    def forward(self, images):
        images = (images - self.pixel_mean) / self.pixel_std
        x = self.embed(self.stem(images))                              # (B, N, d)
        if self.cls is not None:
            x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class AudioEncoder(nn.Module):
    """Log-mel clips of any lengths -> packed tokens. A conv1d stem (k3, then k3 stride 2: half
    as many tokens as frames, as Whisper) and bidirectional blocks that run packed through
    gptcore.attention_varlen, so clips of different lengths never see each other or padding.

    forward(mels: list of (frames_i, n_mels)) -> (tokens (sum_i ceil(frames_i / 2), d), counts)."""

    def __init__(self, n_mels, d_model, n_layers, n_heads, max_tokens):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.pos = nn.Embedding(max_tokens, d_model)
        self.blocks = nn.ModuleList(encoder_block(d_model, n_heads) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.d_model, self.max_tokens = d_model, max_tokens

    def forward(self, mels):
        frames = torch.tensor([m.shape[0] for m in mels])
        counts = (frames + 1) // 2                                      # stride 2, padding 1, k 3
        if len(mels) == 0:
            return self.pos.weight.new_zeros(0, self.d_model), []
        if counts.max() > self.max_tokens:
            raise ValueError(f"mels: expected at most {2 * self.max_tokens} frames per clip, "
                             f"got {int(frames.max())}")
        padded = nn.utils.rnn.pad_sequence(list(mels), batch_first=True)      # (B, F, M)
        valid = torch.arange(padded.shape[1])[None, :] < frames[:, None]       # (B, F)
        h = F.gelu(self.conv1(padded.transpose(1, 2)))                          # (B, d, F)
        # zero past each clip's end, so conv2 sees the zeros a clip alone would be padded with
        h = F.gelu(self.conv2(h * valid[:, None, :].to(h.dtype)))               # (B, d, F')
        keep = torch.arange(h.shape[2])[None, :] < counts[:, None]              # (B, F')
        x = h.transpose(1, 2)[keep]                                              # (T, d)
        cu_seqlens = packing.cu_seqlens(counts)
        x = x + self.pos(packed_positions(cu_seqlens, x.shape[0]))
        for block in self.blocks:
            x = block(x, cu_seqlens=cu_seqlens, max_seqlen=int(counts.max()))
        return self.norm(x), counts.tolist()


class TemporalProjector(nn.Module):
    """Per-frame tokens (B, F, N, d) on a grid x grid layout -> (B, P, d), P = pool * pool.

    `mixing="conv"` runs residual causal 1-D convolutions over time at each of the grid x grid
    token positions (frame t sees frames t-k+1..t, so features can encode motion); then the
    frames are averaged and each frame's grid is average-pooled to pool x pool (fewer tokens,
    as STORM). The convolutions run before the pooling, where a 1-pixel step moves a quarter
    of a 4-pixel patch rather than an eighth of a pooled 8-pixel cell: the captioner's
    teacher-forced direction accuracy after 600 video steps was 99.5% this way and 78% with
    pooling first (docs/multimodal.md). `mixing="mean"` skips the convolutions: plain frame
    averaging, which cannot tell a clip from the clip played backwards (the ablation)."""

    def __init__(self, d_model, grid, pool, mixing="conv", n_layers=2, kernel=3):
        super().__init__()
        if mixing not in ("conv", "mean"):
            raise ValueError(f"mixing: expected 'conv' or 'mean', got {mixing!r}")
        if not 1 <= pool <= grid:
            raise ValueError(f"pool: expected 1 <= pool <= grid={grid}, got {pool}")
        self.grid, self.pool, self.mixing, self.kernel = grid, pool, mixing, kernel
        n_convs = n_layers if mixing == "conv" else 0
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel) for _ in range(n_convs))
        self.norms = nn.ModuleList(RMSNorm(d_model) for _ in range(n_convs))

    def forward(self, x):
        B, T, N, d = x.shape
        if N != self.grid * self.grid:
            raise ValueError(f"x: expected {self.grid}x{self.grid}={self.grid ** 2} tokens per "
                             f"frame, got {N}")
        h = x.permute(0, 2, 3, 1).reshape(B * N, d, T)                         # (BN, d, T)
        for conv, norm in zip(self.convs, self.norms):
            normed = norm(h.transpose(1, 2)).transpose(1, 2)
            h = h + F.gelu(conv(F.pad(normed, (self.kernel - 1, 0))))             # causal in time
        frames = h.mean(dim=2).reshape(B, N, d)                                   # (B, N, d)
        return grid_pool(frames, self.grid, self.pool)                          # (B, P, d)


def grid_pool(tokens, grid, pool):
    """tokens (B, grid*grid, d), row-major over a grid x grid layout -> (B, pool*pool, d): the
    average over each of pool x pool cells (adaptive average pooling), row-major again."""
    B, N, d = tokens.shape
    cells = tokens.transpose(1, 2).reshape(B, d, grid, grid)                     # (B, d, g, g)
    return F.adaptive_avg_pool2d(cells, pool).flatten(2).transpose(1, 2)        # (B, P, d)


class VideoEncoder(nn.Module):
    """videos (B, F, C, H, W) -> (B, P, d): a ViT on every frame, then a TemporalProjector."""

    def __init__(self, frame_encoder, temporal):
        super().__init__()
        self.frame_encoder, self.temporal = frame_encoder, temporal

    def forward(self, videos):
        B, T = videos.shape[:2]
        tokens = self.frame_encoder(videos.flatten(0, 1))                      # (BT, N, d)
        return self.temporal(tokens.reshape(B, T, *tokens.shape[1:]))


class StackedVideoEncoder(nn.Module):
    """videos (B, F, C, H, W) -> (B, P, d): the F frames stacked as F*C channels through one ViT
    (its stem's first convolution reads every frame at each pixel, so motion, its direction and
    its speed are local features), then the grid average-pooled to pool x pool. One ViT pass per
    clip instead of one per frame: the multimodal embedder's video encoder (forward + backward,
    40 clips of 8 16x16 frames, one thread, Zen 5) took 0.12 s of CPU a step with a ViT per
    frame and the temporal projector, 0.016 s this way (docs/embeddings.md)."""

    def __init__(self, clip_encoder, pool):
        super().__init__()
        if not 1 <= pool <= clip_encoder.grid:
            raise ValueError(f"pool: expected 1 <= pool <= grid={clip_encoder.grid}, got {pool}")
        self.clip_encoder, self.pool = clip_encoder, pool

    def forward(self, videos):
        B, T, C, H, W = videos.shape
        tokens = self.clip_encoder(videos.reshape(B, T * C, H, W))                # (B, N, d)
        return grid_pool(tokens, self.clip_encoder.grid, self.pool)             # (B, P, d)
