"""Procedural multimodal data that needs no download: coloured-shape images, tones and chirps,
and short videos of a moving, growing or shrinking shape, each with a caption. Deterministic:
the same seed gives the same examples, bit for bit.

With `hidden=True` each example also carries an attribute its caption never names (HIDDEN):
an image's quadrant, a tone's timbre, a motion's speed -- the analogues of layout and tone of
voice that a caption loses. The examples drawn without it are unchanged."""
import math
from dataclasses import dataclass

import torch

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.15, 0.25, 0.95),
           "yellow": (0.9, 0.85, 0.1), "cyan": (0.1, 0.8, 0.85), "magenta": (0.85, 0.1, 0.8)}
PITCHES = ("low", "high")
SWEEPS = ("rising", "falling", "steady")
DURATIONS = {"short": 0.25, "long": 0.5}                    # seconds
MOTIONS = ("left", "right", "up", "down", "growing", "shrinking")
SAMPLE_RATE = 8000
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
TIMBRES = ("sine", "square", "sawtooth")
SPEEDS = {"slow": 0.5, "fast": 1.0}                         # pixels (or radius) per frame
IMAGE_SIZE, FRAME_SIZE, N_FRAMES = 24, 16, 8


@dataclass
class Example:
    """One input and its caption. `kind` is "image" (3, H, W), "audio" (samples,) or "video"
    (frames, 3, H, W); `attributes` holds the caption's facts by name (shape, colour, ...)."""
    kind: str
    data: torch.Tensor
    caption: str
    attributes: dict


def _uniform(gen, low, high):
    return low + (high - low) * torch.rand((), generator=gen).item()


def _choice(gen, options):
    return options[torch.randint(len(options), (), generator=gen).item()]


def shape_mask(shape, size, cx, cy, radius):
    """A (size, size) float mask of one shape centred at (cx, cy) in pixels, half-width `radius`."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= radius * radius
    elif shape == "square":
        inside = (dx.abs() <= radius * 0.85) & (dy.abs() <= radius * 0.85)
    elif shape == "triangle":                                  # apex up, base at the bottom
        height = (dy + radius) / (2 * radius)                  # 0 at the apex, 1 at the base
        inside = (height >= 0) & (height <= 1) & (dx.abs() <= radius * height)
    elif shape == "cross":
        arm = radius / 3
        inside = (((dx.abs() <= arm) & (dy.abs() <= radius))
                  | ((dy.abs() <= arm) & (dx.abs() <= radius)))
    else:
        raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")
    return inside.float()


def _paint(mask, colour, gen, noise):
    """A (3, H, W) picture: dark background, the shape in `colour`, gaussian pixel noise."""
    rgb = torch.tensor(COLOURS[colour]).view(3, 1, 1)
    background = torch.full((3, 1, 1), 0.1)
    picture = background + (rgb - background) * mask
    picture = picture + noise * torch.randn(picture.shape, generator=gen)
    return picture.clamp(0, 1)


def make_image(gen, noise=0.05, hidden=False):
    """A shape anywhere in the frame; hidden=True: smaller, inside one quadrant (a hidden
    attribute), at least half a pixel from the quadrant's edges."""
    shape, colour = _choice(gen, SHAPES), _choice(gen, tuple(COLOURS))
    attributes = {"shape": shape, "colour": colour}
    if hidden:
        quadrant = _choice(gen, QUADRANTS)
        radius, half = _uniform(gen, 3.5, 5.0), IMAGE_SIZE / 2
        low_x = half if quadrant.endswith("right") else 0.0
        low_y = half if quadrant.startswith("bottom") else 0.0
        cx, cy = (low + _uniform(gen, radius + 0.5, half - radius - 0.5) for low in (low_x, low_y))
        attributes["quadrant"] = quadrant
    else:
        radius = _uniform(gen, 4.5, 8.0)
        cx, cy = (_uniform(gen, radius + 0.5, IMAGE_SIZE - radius - 0.5) for _ in range(2))
    image = _paint(shape_mask(shape, IMAGE_SIZE, cx, cy, radius), colour, gen, noise)
    return Example("image", image, f"a {colour} {shape}", attributes)


def _harmonics(phase, log_f, timbre):
    """A band-limited waveform of the instantaneous phase (peak about 1): sine; square (odd
    harmonics, amplitude 1/k); sawtooth (every harmonic, 1/k). A harmonic is silent wherever
    it would pass 0.95 Nyquist, so nothing aliases."""
    if timbre == "sine":
        return torch.sin(phase)
    step = 2 if timbre == "square" else 1
    wave = torch.zeros_like(phase)
    for k in range(1, 40, step):
        audible = (k * torch.exp(log_f) < 0.95 * SAMPLE_RATE / 2).to(phase.dtype)
        wave = wave + audible * torch.sin(k * phase) / k
    return wave / wave.abs().max().clamp(min=1e-6)


def make_audio(gen, noise=0.05, hidden=False):
    """A tone whose frequency sweeps geometrically: rising, falling or steady about a centre
    frequency that is low (250-500 Hz) or high (1-2 kHz). hidden=True adds a timbre (a hidden
    attribute) and lowers the bands to 150-300 Hz and 450-750 Hz, so a square wave's third
    harmonic stays below Nyquist at the top of a sweep."""
    pitch, sweep, duration = _choice(gen, PITCHES), _choice(gen, SWEEPS), _choice(gen, tuple(DURATIONS))
    timbre = _choice(gen, TIMBRES) if hidden else "sine"
    bands = {"low": (150, 300), "high": (450, 750)} if hidden else {"low": (250, 500),
                                                                    "high": (1000, 2000)}
    centre = _uniform(gen, *bands[pitch])
    ratio = {"rising": 1, "falling": -1, "steady": 0}[sweep] * math.log(_uniform(gen, 1.6, 2.5))
    n = int(DURATIONS[duration] * SAMPLE_RATE)
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    span = DURATIONS[duration]
    # log-frequency moves linearly from log(centre) - ratio/2 to log(centre) + ratio/2
    log_f = math.log(centre) + ratio * (t / span - 0.5)
    phase = 2 * math.pi * torch.cumsum(torch.exp(log_f), 0) / SAMPLE_RATE
    phase = torch.remainder(phase + _uniform(gen, 0, 2 * math.pi), 2 * math.pi).float()
    t = t.float()
    envelope = torch.clamp(torch.minimum(t, span - t) / 0.01, max=1.0)   # 10 ms fade in and out
    tone = _harmonics(phase, log_f.float(), timbre) if hidden else torch.sin(phase)
    wave = 0.5 * envelope * tone + noise * torch.randn(n, generator=gen)
    caption = f"a {duration} {sweep} {pitch} tone"
    attributes = {"pitch": pitch, "sweep": sweep, "duration": duration}
    return Example("audio", wave, caption, attributes | ({"timbre": timbre} if hidden else {}))


def make_video(gen, noise=0.05, hidden=False):
    """N_FRAMES frames of one shape moving 1 px per frame, or growing / shrinking 0.5 px per
    frame. The set of frames is drawn first and then ordered by the direction, so a left-moving
    video is a right-moving one played backwards: no single frame, and no average of frames,
    tells the direction apart from its reverse. hidden=True adds a speed (a hidden attribute):
    "fast" is the rate above, "slow" half of it."""
    shape, colour, motion = _choice(gen, SHAPES), _choice(gen, tuple(COLOURS)), _choice(gen, MOTIONS)
    speed = _choice(gen, tuple(SPEEDS)) if hidden else "fast"
    rate = SPEEDS[speed]
    steps = torch.arange(N_FRAMES, dtype=torch.float32)
    if motion in ("growing", "shrinking"):
        small = _uniform(gen, 2.5, 3.5)
        radii = (small + 0.5 * rate * steps).tolist()          # grows by 3.5 px (fast) a clip
    else:
        radius = _uniform(gen, 3.0, 4.0)
        travel = rate * (N_FRAMES - 1)
        start = _uniform(gen, radius + 0.5, FRAME_SIZE - radius - 0.5 - travel)
        track = (start + rate * steps).tolist()
        across = _uniform(gen, radius + 0.5, FRAME_SIZE - radius - 0.5)
    if motion in ("left", "up", "shrinking"):
        order = list(range(N_FRAMES - 1, -1, -1))
    else:
        order = list(range(N_FRAMES))
    frames = []
    for i in order:
        if motion in ("growing", "shrinking"):
            mask = shape_mask(shape, FRAME_SIZE, FRAME_SIZE / 2, FRAME_SIZE / 2, radii[i])
        elif motion in ("left", "right"):
            mask = shape_mask(shape, FRAME_SIZE, track[i], across, radius)
        else:                                                  # "down" runs with the row index
            mask = shape_mask(shape, FRAME_SIZE, across, track[i], radius)
        frames.append(_paint(mask, colour, gen, noise))
    verb = motion if motion in ("growing", "shrinking") else f"moving {motion}"
    attributes = {"shape": shape, "colour": colour, "direction": motion}
    return Example("video", torch.stack(frames), f"a {colour} {shape} {verb}",
                   attributes | ({"speed": speed} if hidden else {}))


MAKERS = {"image": make_image, "audio": make_audio, "video": make_video}


def make_dataset(kind, n, seed, hidden=False):
    """n examples of one kind; the same (kind, n, seed, hidden) always gives the same examples."""
    if kind not in MAKERS:
        raise ValueError(f"kind: expected one of {tuple(MAKERS)}, got {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    if hidden:
        return [MAKERS[kind](gen, hidden=True) for _ in range(n)]
    return [MAKERS[kind](gen) for _ in range(n)]


# attribute -> the words it can take; chance is 1 / len(words) since every value is equally likely
ATTRIBUTES = {"image": {"shape": SHAPES, "colour": tuple(COLOURS)},
              "audio": {"pitch": PITCHES, "sweep": SWEEPS, "duration": tuple(DURATIONS)},
              "video": {"shape": SHAPES, "colour": tuple(COLOURS), "direction": MOTIONS}}


# the attributes no caption names, drawn only with hidden=True; chance 1 / len(values) likewise
HIDDEN = {"image": {"quadrant": QUADRANTS}, "audio": {"timbre": TIMBRES},
          "video": {"speed": tuple(SPEEDS)}}


def parse_caption(kind, caption):
    """The attributes a generated caption states: {name: word or None}."""
    words = caption.split()
    parsed = {}
    for name, options in ATTRIBUTES[kind].items():
        found = [w for w in words if w in options]
        parsed[name] = found[0] if len(found) == 1 else None
    return parsed
