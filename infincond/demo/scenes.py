"""The Shapes world's scene generator: an object (the class) with a colour, a pattern and a size, on a
textured background, with optional small rocks as distractors. Deterministic for a seed, with every
image's ground truth attributes and the object's mask kept.

The splits plant a spurious correlation, like Waterbirds: in ``train`` and ``validation`` most images of
one class lie on one background that is rare for the other classes; ``test`` is balanced over
class x background, so the correlation is absent there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 50, 190),
    "orange": (250, 130, 20),
}
PATTERNS = ("solid", "striped", "dotted", "chequered")
SIZES = ("small", "large")
BACKGROUNDS = ("grass", "sand", "water", "snow")
DISTRACTOR = "rock"

#: Every attribute family of the world and its values: the ground-truth concept vocabulary.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "size": SIZES,
    "background": BACKGROUNDS,
    "distractor": (DISTRACTOR,),
}
SPLITS = ("train", "validation", "test")
_SUPERSAMPLE = 4


def vocabulary_concepts() -> list[str]:
    """All attribute values as concept texts, family by family (23 concepts)."""
    return [value for values in VOCABULARY.values() for value in values]


@dataclass(frozen=True)
class Scene:
    """Ground truth of one image. ``bbox`` (x0, y0, x1, y1) is the object's box in pixels."""

    shape: str
    colour: str
    pattern: str
    size: str
    background: str
    rocks: int
    bbox: tuple[int, int, int, int]
    centre: tuple[float, float]
    radius: float

    def attributes(self) -> dict[str, str]:
        """The categorical attributes, one value per family (``distractor`` is "rock" or "none")."""
        return {"shape": self.shape, "colour": self.colour, "pattern": self.pattern, "size": self.size,
                "background": self.background, "distractor": DISTRACTOR if self.rocks else "none"}


@dataclass(frozen=True)
class SceneConfig:
    """How splits are drawn.

    ``spurious_rate``: share of ``spurious_class`` images on ``spurious_background`` in the biased splits;
    ``rare_rate``: share of every other class on that background there. ``rock_rate``: chance of rocks.
    """

    image_size: int = 64
    spurious_class: str = "circle"
    spurious_background: str = "water"
    spurious_rate: float = 0.9
    rare_rate: float = 0.03
    rock_rate: float = 0.4
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 6000, "validation": 1200, "test": 1200})

    def __post_init__(self) -> None:
        if self.spurious_class not in SHAPES:
            raise ValueError(f"spurious_class must be one of {SHAPES}, not {self.spurious_class!r}")
        if self.spurious_background not in BACKGROUNDS:
            raise ValueError(f"spurious_background must be one of {BACKGROUNDS}, not {self.spurious_background!r}")
        if self.image_size < 64:
            raise ValueError("image_size must be at least 64 pixels")

    def to_dict(self) -> dict:
        return asdict(self)


# -- sampling -----------------------------------------------------------------------------------------
def background_probabilities(config: SceneConfig, biased: bool) -> np.ndarray:
    """P(background | class), shape (n_classes, n_backgrounds); uniform when not ``biased``."""
    n_bg = len(BACKGROUNDS)
    if not biased:
        return np.full((len(SHAPES), n_bg), 1.0 / n_bg)
    spurious = BACKGROUNDS.index(config.spurious_background)
    probs = np.empty((len(SHAPES), n_bg))
    for c, shape in enumerate(SHAPES):
        on = config.spurious_rate if shape == config.spurious_class else config.rare_rate
        probs[c] = (1.0 - on) / (n_bg - 1)
        probs[c, spurious] = on
    return probs


def sample_scene(rng: np.random.Generator, shape: str, background: str, config: SceneConfig) -> Scene:
    """Draw the free attributes (colour, pattern, size, position, rocks) of one scene."""
    size = SIZES[int(rng.integers(len(SIZES)))]
    s = config.image_size
    radius = float(rng.uniform(0.14, 0.19) if size == "small" else rng.uniform(0.24, 0.31)) * s
    margin = radius + 2
    cx, cy = (float(v) for v in rng.uniform(margin, s - margin, 2))
    rocks = int(rng.integers(1, 3)) if rng.random() < config.rock_rate else 0
    bbox = (int(np.floor(cx - radius)), int(np.floor(cy - radius)),
            int(np.ceil(cx + radius)), int(np.ceil(cy + radius)))
    return Scene(shape=shape, colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
                 pattern=PATTERNS[int(rng.integers(len(PATTERNS)))], size=size, background=background,
                 rocks=rocks, bbox=bbox, centre=(cx, cy), radius=radius)


def _image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def sample_split(split: str, n: int, config: SceneConfig, seed: int) -> list[tuple[Scene, int]]:
    """Scenes of a split with the seed of each image's texture noise.

    Classes are balanced; ``test`` is stratified over class x background, the others follow the biased
    background distribution. Deterministic for (split, n, config, seed)."""
    stream = SPLITS.index(split) if split in SPLITS else 10 + sum(map(ord, split))
    rng = np.random.default_rng([seed, stream])  # the split layout; each image has its own stream
    classes = np.resize(np.arange(len(SHAPES)), n)
    if split == "test":
        cells = np.resize(np.arange(len(SHAPES) * len(BACKGROUNDS)), n)
        classes, backgrounds = cells // len(BACKGROUNDS), cells % len(BACKGROUNDS)
    else:
        probs = background_probabilities(config, biased=True)
        backgrounds = np.array([rng.choice(len(BACKGROUNDS), p=probs[c]) for c in classes])
    order = rng.permutation(n)
    scenes = []
    for i, j in enumerate(order):
        image_rng = _image_rng(seed, stream, i)
        scenes.append((sample_scene(image_rng, SHAPES[classes[j]], BACKGROUNDS[backgrounds[j]], config),
                       int(image_rng.integers(2**31))))
    return scenes


def random_scenes(n: int, config: SceneConfig, seed: int, stream: int = 100) -> list[tuple[Scene, int]]:
    """Scenes with every attribute independent and uniform (for training and checking the encoder)."""
    out = []
    for i in range(n):
        rng = _image_rng(seed, stream, i)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        out.append((sample_scene(rng, shape, background, config), int(rng.integers(2**31))))
    return out


# -- rendering ----------------------------------------------------------------------------------------
def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        h = 0.82 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        return [(cx + r * np.cos(a), cy + 0.15 * r + r * np.sin(a)) for a in angles]
    if shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles, strict=True)]
    if shape == "cross":
        w = 0.34 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    return None  # circle


def shape_mask(shape: str, centre: tuple[float, float], radius: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (size, size) float32 in [0, 1] of a shape."""
    mask = np.zeros((size, size), np.float32)
    box, patch = _shape_patch(shape, centre, radius, size)
    mask[box] = patch
    return mask


def _shape_patch(shape: str, centre: tuple[float, float], radius: float,
                 size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The coverage of a shape on the pixels of its bounding box only: (rows, cols) slices and the patch.

    Drawn ``_SUPERSAMPLE`` times larger on a canvas that starts at a whole pixel, then box-filtered: the
    coverage a full-size canvas gives (0 outside the box), up to Pillow's rounding of the shifted
    coordinates (about one sub-pixel of one diamond edge in a thousand images differs), at a fraction
    of the cost."""
    k = _SUPERSAMPLE
    cx, cy, r = centre[0] * k, centre[1] * k, radius * k
    x0, y0 = max(0, int(np.floor(centre[0] - radius)) - 1), max(0, int(np.floor(centre[1] - radius)) - 1)
    x1, y1 = min(size, int(np.ceil(centre[0] + radius)) + 2), min(size, int(np.ceil(centre[1] + radius)) + 2)
    if x1 <= x0 or y1 <= y0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), np.float32)
    ox, oy = x0 * k, y0 * k
    canvas = Image.new("L", ((x1 - x0) * k, (y1 - y0) * k), 0)
    draw = ImageDraw.Draw(canvas)
    points = _polygon(shape, cx, cy, r)
    if points is None:
        draw.ellipse([cx - r - ox, cy - r - oy, cx + r - ox, cy + r - oy], fill=255)
    else:
        draw.polygon([(x - ox, y - oy) for x, y in points], fill=255)
    patch = np.asarray(canvas.resize((x1 - x0, y1 - y0), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return (slice(y0, y1), slice(x0, x1)), patch


def _smooth_noise(rng: np.random.Generator, size: int, cell: tuple[int, int]) -> np.ndarray:
    """Value noise (size, size) in about [-1, 1], with features of ``cell`` (rows, cols) pixels."""
    rows, cols = max(1, size // cell[0]) + 1, max(1, size // cell[1]) + 1
    coarse = Image.fromarray(rng.uniform(0, 255, (rows, cols)).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0


@functools.lru_cache(maxsize=8)
def _grid(size: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates (size, size), read-only, shared by every image of a size."""
    y, x = np.mgrid[0:size, 0:size].astype(dtype)
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _background(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(size, np.float32)
    fine = rng.normal(0, 1, (size, size)).astype(np.float32)
    if name == "grass":
        blades = _smooth_noise(rng, size, (8, 1))  # vertical streaks
        shade = 0.6 * blades + 0.25 * fine
        base = np.array([70, 135, 50], np.float32)
        return base + shade[..., None] * np.array([22, 38, 14], np.float32)
    if name == "sand":
        dunes = _smooth_noise(rng, size, (16, 16))
        specks = (rng.random((size, size)) < 0.06).astype(np.float32)
        base = np.array([222, 196, 146], np.float32)
        return base + (10 * dunes + 6 * fine - 45 * specks)[..., None] * np.array([1.0, 0.95, 0.8], np.float32)
    if name == "water":
        phase = rng.uniform(0, 2 * np.pi)
        waves = np.sin(2 * np.pi * (y / 7.0 + 0.25 * np.sin(2 * np.pi * x / 20.0 + phase)))
        crest = np.clip((waves - 0.55) / 0.45, 0, 1)
        base = np.array([45, 95, 165], np.float32)
        return base + crest[..., None] * np.array([70, 70, 60], np.float32) + 5 * fine[..., None]
    if name == "snow":
        drifts = _smooth_noise(rng, size, (20, 20))
        flakes = (rng.random((size, size)) < 0.03).astype(np.float32)
        base = np.array([232, 237, 245], np.float32)
        return base + (6 * drifts + 3 * fine)[..., None] - flakes[..., None] * np.array([40, 30, 10], np.float32)
    raise ValueError(f"unknown background {name!r}")


def _pattern_mask(pattern: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Where the pattern's second (light) tone goes: (size, size) float32 in {0, 1}."""
    y, x = _grid(size, np.int64)
    ox, oy = rng.integers(0, 8, 2)
    if pattern == "striped":
        return (((y + oy) % 8) < 4).astype(np.float32)
    if pattern == "dotted":
        dx, dy = (x + ox) % 6 - 2.5, (y + oy) % 6 - 2.5
        return (dx * dx + dy * dy < 2.6).astype(np.float32)
    if pattern == "chequered":
        return ((((x + ox) // 5) + ((y + oy) // 5)) % 2).astype(np.float32)
    return np.zeros((size, size), np.float32)


def _composite(canvas: np.ndarray, box: tuple[slice, slice], coverage: np.ndarray, paint) -> np.ndarray:
    """``canvas * (1 - coverage) + coverage * paint`` on the pixels of ``box`` only: outside it the coverage
    is 0 and the canvas keeps its values. The canvas takes the dtype that the whole-image expression
    would have (float64 once a float64 paint is used), so the pixels are the same either way.
    ``paint`` is a number, a colour, or a (size, size, c) array (cropped here)."""
    if isinstance(paint, np.ndarray) and paint.ndim == 3:
        paint = paint[box]
    region = canvas[box] * (1 - coverage) + coverage * paint
    if region.dtype != canvas.dtype:
        canvas = canvas.astype(region.dtype)
    canvas[box] = region
    return canvas


def render(scene: Scene, noise_seed: int, image_size: int = 64) -> tuple[Image.Image, np.ndarray]:
    """The RGB image of a scene and the object's coverage mask (H, W) float32 in [0, 1]."""
    rng = np.random.default_rng(noise_seed)
    s = image_size
    canvas = _background(scene.background, s, rng)
    for _ in range(scene.rocks):  # small grey rocks, drawn under the object
        r = float(rng.uniform(0.035, 0.06)) * s
        centre = (float(rng.uniform(r + 1, s - r - 1)), float(rng.uniform(r + 1, s - r - 1)))
        grey = float(rng.uniform(95, 135))
        rim_box, rim = _shape_patch("circle", centre, r + 0.8, s)
        body_box, body = _shape_patch("circle", centre, r, s)
        canvas = _composite(canvas, rim_box, rim[..., None], 45.0)
        canvas = _composite(canvas, body_box, body[..., None], grey + 8 * rng.normal(0, 1, (s, s, 1)))
    colour = np.array(COLOURS[scene.colour], np.float32) + rng.normal(0, 6, 3).astype(np.float32)
    light = colour + 0.6 * (255.0 - colour)
    tone = _pattern_mask(scene.pattern, s, rng)[..., None]
    fill = colour * (1 - tone) + light * tone
    outline_box, outline = _shape_patch(scene.shape, scene.centre, scene.radius + 1.2, s)
    body_box, body = _shape_patch(scene.shape, scene.centre, scene.radius, s)
    canvas = _composite(canvas, outline_box, outline[..., None], 30.0)
    canvas = _composite(canvas, body_box, body[..., None], fill)
    mask = np.zeros((s, s), np.float32)
    mask[body_box] = body
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)), mask


def render_many(scenes: Sequence[tuple[Scene, int]], image_size: int = 64) -> tuple[list[Image.Image], np.ndarray]:
    """Images and stacked object masks (N, H, W) of (scene, noise seed) pairs."""
    images, masks = [], []
    for scene, noise_seed in scenes:
        image, mask = render(scene, noise_seed, image_size)
        images.append(image)
        masks.append(mask)
    return images, np.stack(masks) if masks else np.zeros((0, image_size, image_size), np.float32)


# -- captions -----------------------------------------------------------------------------------------
def caption(scene: Scene, rng: np.random.Generator, keep: float = 0.6) -> tuple[str, dict[str, str]]:
    """A caption naming a random subset of the scene's attributes (the shape most of the time), and the
    attributes it names, so a batch's true matches can be computed."""
    named: dict[str, str] = {}
    truth = scene.attributes()
    for family, p in (("shape", 0.85), ("colour", keep), ("pattern", keep), ("size", keep * 0.7),
                      ("background", keep), ("distractor", 0.5)):
        value = truth[family]
        if value != "none" and rng.random() < p:
            named[family] = value
    if not named:
        named["shape"] = scene.shape
    words = [named[f] for f in ("size", "colour", "pattern") if f in named]
    noun = named.get("shape", "shape")
    text = "a photo of a " + " ".join([*words, noun])
    if "background" in named:
        text += f" on {named['background']}"
    if "distractor" in named:
        text += f" with {named['distractor']}s"
    return text + ".", named
