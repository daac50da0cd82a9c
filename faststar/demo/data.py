"""Procedural videos of one moving shape, with captions from a small grammar.

A caption reads "a <colour> <shape> <motion>[ on a <background> background]". Every
video is a pure function of its caption and a seed, so a data set is a list of
(caption, seed) pairs. A fixed set of (colour, shape, motion) triples never appears in
training: ``HELD_OUT_TRIPLES`` is the held-out split that the evaluation uses.

Videos are float32 tensors [3, F, H, W] in [-1, 1], the VAE's input range.
"""

import logging
import math
import random
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.15, 0.1),
    "green": (0.1, 0.85, 0.2),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (0.95, 0.9, 0.1),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.65, 0.15, 0.9),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "bouncing", "growing", "spinning")
BACKGROUNDS = ("black", "gray", "gradient")

# Linear motions and the image-axis direction (dx, dy) of each; y grows downwards.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0),
    "moving right": (1, 0),
    "moving up": (0, -1),
    "moving down": (0, 1),
}

VIDEO_FRAMES = 17
VIDEO_SIZE = 64  # height and width in pixels

OBJECT_RADIUS = 9.0  # pixels: half the side of a square, the radius of a circle
TRAVEL = 30.0  # pixels a linear motion covers over the clip
GROWTH = (4.0, 15.0)  # radius at the first and last frame of "growing"
BOUNCE_HEIGHT = 22.0  # pixels of the highest jump
BOUNCES = 2  # jumps per clip


def _held_out_triples() -> frozenset[tuple[str, str, str]]:
    """Pick one (colour, shape, motion) triple in seven, spread so every word is still trained."""
    triples = set()
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            for mi, motion in enumerate(MOTIONS):
                if (ci + 2 * si + 3 * mi) % 7 == 0:
                    triples.add((colour, shape, motion))
    return frozenset(triples)


HELD_OUT_TRIPLES = _held_out_triples()


@dataclass(frozen=True)
class Caption:
    """One caption of the grammar; ``background`` None means the caption omits it."""

    colour: str
    shape: str
    motion: str
    background: str | None = None

    def text(self) -> str:
        words = f"a {self.colour} {self.shape} {self.motion}"
        if self.background is None:
            return words
        return f"{words} on a {self.background} background"

    @property
    def triple(self) -> tuple[str, str, str]:
        return self.colour, self.shape, self.motion

    @property
    def held_out(self) -> bool:
        return self.triple in HELD_OUT_TRIPLES


def parse_caption(text: str) -> Caption:
    """Parse a grammar caption; raise ValueError naming the grammar when it does not fit."""
    words = text.lower().strip().rstrip(".").split()
    grammar = (
        "'a <colour> <shape> <motion> [on a <background> background]' with colours "
        f"{list(COLOURS)}, shapes {list(SHAPES)}, motions {list(MOTIONS)} and backgrounds {list(BACKGROUNDS)}"
    )
    if len(words) < 4 or words[0] != "a" or words[1] not in COLOURS or words[2] not in SHAPES:
        raise ValueError(f"caption {text!r} does not follow the demo grammar {grammar}")

    rest = words[3:]
    motion_words = 2 if rest[0] == "moving" else 1
    motion = " ".join(rest[:motion_words])
    tail = rest[motion_words:]
    if motion not in MOTIONS:
        raise ValueError(f"caption {text!r} has the unknown motion {motion!r}; the grammar is {grammar}")

    background = None
    if tail:
        if len(tail) != 4 or tail[:2] != ["on", "a"] or tail[3] != "background" or tail[2] not in BACKGROUNDS:
            raise ValueError(f"caption {text!r} has an invalid background part; the grammar is {grammar}")
        background = tail[2]
    return Caption(words[1], words[2], motion, background)


def all_captions(held_out: bool) -> list[Caption]:
    """Return every caption of the training (False) or held-out (True) split, with and without background."""
    captions = []
    for colour in COLOURS:
        for shape in SHAPES:
            for motion in MOTIONS:
                if ((colour, shape, motion) in HELD_OUT_TRIPLES) != held_out:
                    continue
                for background in (None, *BACKGROUNDS):
                    captions.append(Caption(colour, shape, motion, background))
    return captions


def sample_caption(rng: random.Random, held_out: bool = False) -> Caption:
    """Draw a caption of one split; a third of them omit the background."""
    while True:
        triple = (rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(MOTIONS))
        if (triple in HELD_OUT_TRIPLES) == held_out:
            break
    background = None if rng.random() < 1 / 3 else rng.choice(BACKGROUNDS)
    return Caption(*triple, background)


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectory:
    """Per-frame centre (x, y), radius and rotation angle of the shape, in pixels and radians."""

    x: list[float]
    y: list[float]
    radius: list[float]
    angle: list[float]


def make_trajectory(motion: str, rng: random.Random, frames: int = VIDEO_FRAMES, size: int = VIDEO_SIZE) -> Trajectory:
    """Draw a start position and build the per-frame path of one motion."""
    margin = OBJECT_RADIUS + 2
    progress = [f / (frames - 1) for f in range(frames)]
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    radius = [OBJECT_RADIUS] * frames
    angle0 = rng.uniform(0, 2 * math.pi)
    angle = [angle0] * frames

    if motion in DIRECTIONS:
        dx, dy = DIRECTIONS[motion]
        low, high = margin, size - margin - TRAVEL
        start_x = rng.uniform(low, high) if dx > 0 else rng.uniform(low + TRAVEL, size - margin)
        start_y = rng.uniform(low, high) if dy > 0 else rng.uniform(low + TRAVEL, size - margin)
        x = [start_x + dx * TRAVEL * p if dx else cx for p in progress]
        y = [start_y + dy * TRAVEL * p if dy else cy for p in progress]
        return Trajectory(x, y, radius, angle)

    if motion == "bouncing":
        floor = rng.uniform(margin + BOUNCE_HEIGHT, size - margin)
        y = [floor - BOUNCE_HEIGHT * abs(math.sin(math.pi * BOUNCES * p)) for p in progress]
        return Trajectory([cx] * frames, y, radius, angle)

    if motion == "growing":
        grow_margin = GROWTH[1] + 1
        cx = rng.uniform(grow_margin, size - grow_margin)
        cy = rng.uniform(grow_margin, size - grow_margin)
        radius = [GROWTH[0] + (GROWTH[1] - GROWTH[0]) * p for p in progress]
        return Trajectory([cx] * frames, [cy] * frames, radius, angle)

    if motion == "spinning":
        spin = rng.choice((-1, 1)) * 2 * math.pi / 3  # a third of a turn over the clip
        angle = [angle0 + spin * p for p in progress]
        return Trajectory([cx] * frames, [cy] * frames, radius, angle)

    raise ValueError(f"unknown motion {motion!r}; use one of {list(MOTIONS)}")


def background_image(background: str, size: int = VIDEO_SIZE) -> torch.Tensor:
    """Background [3, H, W] in [0, 1]: black, mid gray, or a vertical dark-to-gray gradient."""
    if background == "black":
        return torch.zeros(3, size, size)
    if background == "gray":
        return torch.full((3, size, size), 0.45)
    if background == "gradient":
        ramp = torch.linspace(0.05, 0.45, size).view(1, size, 1)
        return ramp.expand(3, size, size).clone()
    raise ValueError(f"unknown background {background!r}; use one of {list(BACKGROUNDS)}")


def shape_coverage(shape: str, x: float, y: float, radius: float, angle: float, size: int = VIDEO_SIZE) -> torch.Tensor:
    """Anti-aliased coverage [H, W] in [0, 1] of a shape from its signed distance."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    py, px = torch.meshgrid(coords - y, coords - x, indexing="ij")

    if shape == "circle":
        distance = torch.sqrt(px**2 + py**2) - radius
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        u = cos * px + sin * py  # rotate pixel offsets into the shape's frame
        v = -sin * px + cos * py
        if shape == "square":
            distance = torch.maximum(u.abs(), v.abs()) - radius
        elif shape == "triangle":
            # Intersection of three half-planes at distance 0.75 * radius from the centre.
            inradius = radius * 0.75
            edges = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3,
                                                         math.pi / 2 + 4 * math.pi / 3)]
            distance = torch.stack([nx * u + ny * v for nx, ny in edges]).amax(0) - inradius
        else:
            raise ValueError(f"unknown shape {shape!r}; use one of {list(SHAPES)}")
    return (0.5 - distance).clamp(0.0, 1.0)


def render_video(caption: Caption, seed: int, frames: int = VIDEO_FRAMES, size: int = VIDEO_SIZE) -> torch.Tensor:
    """Render the video [3, F, H, W] in [-1, 1] of a caption; the seed picks path and background."""
    rng = random.Random(f"{caption.text()}|{seed}")
    background = caption.background or rng.choice(BACKGROUNDS)
    path = make_trajectory(caption.motion, rng, frames, size)
    base = background_image(background, size)
    colour = torch.tensor(COLOURS[caption.colour]).view(3, 1, 1)

    video = torch.empty(3, frames, size, size)
    for f in range(frames):
        alpha = shape_coverage(caption.shape, path.x[f], path.y[f], path.radius[f], path.angle[f], size)
        video[:, f] = base * (1 - alpha) + colour * alpha
    return video * 2 - 1


@dataclass(frozen=True)
class Sample:
    """One item of a data set: the caption and the seed its video is rendered from."""

    caption: Caption
    seed: int

    def video(self) -> torch.Tensor:
        return render_video(self.caption, self.seed)


def make_samples(count: int, seed: int, held_out: bool = False) -> list[Sample]:
    """Return ``count`` (caption, seed) pairs of one split, deterministic from ``seed``."""
    rng = random.Random(seed)
    return [Sample(sample_caption(rng, held_out), rng.randrange(2**31)) for _ in range(count)]
