"""Procedural training videos for the embedded model: coloured shapes moving over plain backgrounds.

Every clip is a background colour with one or two objects (a circle or a square, in red, green, blue or
yellow) moving left, right, up or down in a straight line at a constant speed, and a prompt that says so,
e.g. ``"a red circle moving right on a dark background"`` (the background phrase is optional; when it is
left out the background is still one of the named ones). Edges are anti-aliased by pixel coverage, and
colours are jittered a little so that the model sees a distribution rather than eight exact RGB values.

The same scene renders at any size and frame count (positions are in fractions of the frame), which is what
lets the VAE train on small crops and the transformer on the default size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (45, 180, 65),
    "blue": (40, 85, 225),
    "yellow": (235, 210, 45),
}
SHAPES = ("circle", "square")
DIRECTIONS: dict[str, tuple[float, float]] = {  # (dy, dx) in image coordinates: y grows downwards
    "left": (0.0, -1.0),
    "right": (0.0, 1.0),
    "up": (-1.0, 0.0),
    "down": (1.0, 0.0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "dark": (28, 28, 34),
    "light": (212, 212, 204),
    "gray": (118, 118, 122),
}
# Every word a prompt can use; the embedded tokenizer's vocabulary is built from this.
PROMPT_WORDS = (
    "a",
    "and",
    "on",
    "moving",
    "background",
    *tuple(COLORS),
    *SHAPES,
    *tuple(DIRECTIONS),
    *tuple(BACKGROUNDS),
)

COLOR_JITTER = 12  # per channel, uniform in [-COLOR_JITTER, COLOR_JITTER]


@dataclass(frozen=True)
class MovingObject:
    """One object: shape, colour name, direction name; position and size as fractions of the frame.

    ``start`` is the centre (y, x) in the first frame, ``travel`` the distance covered by the last frame as a
    fraction of the frame's extent along the direction of motion, ``size`` the diameter (or side) as a
    fraction of the frame's shorter side, ``rgb`` the exact colour drawn (the named colour plus jitter).
    """

    shape: str
    color: str
    direction: str
    start: tuple[float, float]
    travel: float
    size: float
    rgb: tuple[int, int, int]

    @property
    def phrase(self) -> str:
        return f"a {self.color} {self.shape} moving {self.direction}"


@dataclass(frozen=True)
class Scene:
    """A background and the objects on it; ``name_background`` says whether the prompt names the background."""

    background: str
    background_rgb: tuple[int, int, int]
    objects: tuple[MovingObject, ...]
    name_background: bool = True

    @property
    def prompt(self) -> str:
        text = " and ".join(obj.phrase for obj in self.objects)
        return f"{text} on a {self.background} background" if self.name_background else text


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    noise = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    return tuple(int(c) for c in np.clip(np.asarray(rgb) + noise, 0, 255))


def random_object(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    color: str | None = None,
    direction: str | None = None,
) -> MovingObject:
    """An object with the given (or random) shape, colour and direction, placed so it stays in the frame."""
    shape = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
    color = color if color is not None else list(COLORS)[rng.integers(len(COLORS))]
    direction = direction if direction is not None else list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    if shape not in SHAPES or color not in COLORS or direction not in DIRECTIONS:
        raise ValueError(
            f"unknown object ({shape!r}, {color!r}, {direction!r}); shapes {list(SHAPES)}, colours "
            f"{list(COLORS)}, directions {list(DIRECTIONS)}"
        )
    size = float(rng.uniform(0.2, 0.3))
    travel = float(rng.uniform(0.35, 0.5))
    margin = size / 2 + 0.03
    dy, dx = DIRECTIONS[direction]
    start = []
    for step in (dy, dx):
        if step > 0:  # must end inside: start + travel <= 1 - margin
            start.append(float(rng.uniform(margin, 1 - margin - travel)))
        elif step < 0:
            start.append(float(rng.uniform(margin + travel, 1 - margin)))
        else:
            start.append(float(rng.uniform(margin, 1 - margin)))
    return MovingObject(shape, color, direction, (start[0], start[1]), travel, size, _jitter(COLORS[color], rng))


def random_scene(
    rng: np.random.Generator, *, two_objects_probability: float = 0.25, name_background_probability: float = 0.5
) -> Scene:
    """A random scene: one object, or two of different colours with probability ``two_objects_probability``."""
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    objects = [random_object(rng)]
    if rng.random() < two_objects_probability:
        other_colors = [c for c in COLORS if c != objects[0].color]
        objects.append(random_object(rng, color=other_colors[rng.integers(len(other_colors))]))
    return Scene(
        background,
        _jitter(BACKGROUNDS[background], rng),
        tuple(objects),
        name_background=bool(rng.random() < name_background_probability),
    )


def _coverage(obj: MovingObject, t: float, ys: np.ndarray, xs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fraction of each pixel covered by the object at time t in [0, 1], shape (H, W)."""
    dy, dx = DIRECTIONS[obj.direction]
    cy = (obj.start[0] + dy * obj.travel * t) * height
    cx = (obj.start[1] + dx * obj.travel * t) * width
    radius = obj.size * min(height, width) / 2
    if obj.shape == "circle":
        dist = np.sqrt((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2)
        return np.clip(radius - dist + 0.5, 0.0, 1.0)
    cover_y = np.clip(radius - np.abs(ys - cy) + 0.5, 0.0, 1.0)
    cover_x = np.clip(radius - np.abs(xs - cx) + 0.5, 0.0, 1.0)
    return cover_y[:, None] * cover_x[None, :]


def render(scene: Scene, num_frames: int, height: int, width: int) -> np.ndarray:
    """Render a scene as a uint8 video of shape (num_frames, height, width, 3)."""
    if num_frames < 1 or height < 8 or width < 8:
        raise ValueError(f"need num_frames >= 1 and height, width >= 8; got {num_frames}, {height}, {width}")
    ys = np.arange(height, dtype=np.float32) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5
    video = np.empty((num_frames, height, width, 3), dtype=np.float32)
    for f in range(num_frames):
        t = f / max(num_frames - 1, 1)
        frame = np.broadcast_to(np.asarray(scene.background_rgb, dtype=np.float32), (height, width, 3)).copy()
        for obj in scene.objects:  # later objects are drawn on top
            alpha = _coverage(obj, t, ys, xs, height, width)[..., None]
            frame = frame * (1 - alpha) + np.asarray(obj.rgb, dtype=np.float32) * alpha
        video[f] = frame
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def evaluation_scenes(count: int = 40, seed: int = 1234) -> list[Scene]:
    """``count`` one-object scenes cycling through every (colour, direction) pair, shapes and backgrounds.

    Used by the prompt-adherence measurement: the pairs are balanced, the positions random but seeded.
    """
    rng = np.random.default_rng(seed)
    pairs = [(c, d) for c in COLORS for d in DIRECTIONS]
    scenes = []
    for i in range(count):
        color, direction = pairs[i % len(pairs)]
        shape = SHAPES[(i // len(pairs)) % len(SHAPES)]
        background = list(BACKGROUNDS)[i % len(BACKGROUNDS)]
        obj = random_object(rng, shape=shape, color=color, direction=direction)
        scenes.append(Scene(background, BACKGROUNDS[background], (obj,), name_background=True))
    return scenes
