"""The Shapes dataset as a Hub dataset repo: each split rendered and written as parquet (PNG images and
the scenes' attributes), with a README whose front matter declares the splits."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from .scenes import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    SHAPES,
    SIZES,
    SPLITS,
    Scene,
    SceneConfig,
    render_many,
    sample_split,
)


def _features():
    from datasets import ClassLabel, Features, Value
    from datasets import Image as ImageFeature
    from datasets import Sequence as SequenceFeature

    return Features({
        "image": ImageFeature(),
        "label": ClassLabel(names=list(SHAPES)),
        "colour": ClassLabel(names=list(COLOURS)),
        "pattern": ClassLabel(names=list(PATTERNS)),
        "size": ClassLabel(names=list(SIZES)),
        "background": ClassLabel(names=list(BACKGROUNDS)),
        "rocks": Value("int32"),
        "bbox": SequenceFeature(Value("int32"), length=4),
    })


def _png(image: Image.Image) -> dict:
    """An image as the ``datasets`` Image feature stores it. Level 1 zlib: about half the time of the
    default, and no larger on these noisy textures."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def split_dataset(scenes: Sequence[tuple[Scene, int]], images: Sequence[Image.Image]):
    """A ``datasets.Dataset`` of rendered scenes (``images``, in order): ``image``, ``label`` (the shape)
    and the attributes."""
    from datasets import Dataset

    rows = [scene for scene, _ in scenes]
    columns = {
        "image": [_png(image) for image in images],
        "label": [SHAPES.index(s.shape) for s in rows],
        "colour": [list(COLOURS).index(s.colour) for s in rows],
        "pattern": [PATTERNS.index(s.pattern) for s in rows],
        "size": [SIZES.index(s.size) for s in rows],
        "background": [BACKGROUNDS.index(s.background) for s in rows],
        "rocks": [s.rocks for s in rows],
        "bbox": [list(s.bbox) for s in rows],
    }
    return Dataset.from_dict(columns, features=_features())


RenderedSplit = tuple[list[tuple[Scene, int]], list[Image.Image]]


def write_dataset_repo(folder: str | os.PathLike, config: SceneConfig, seed: int, card: str = "",
                       progress: bool = True, *, report: Callable[[int, int], None] | None = None,
                       on_split: Callable[[str, RenderedSplit], None] | None = None, chunk: int = 256) -> Path:
    """Write the splits as a Hub dataset repo: ``data/<split>-00000-of-00001.parquet`` and a README whose
    front matter declares the splits, so ``load_dataset(folder)`` and ``push_to_hub`` see the same thing.

    ``report(done, total)``: images rendered so far, after every ``chunk`` images (for a progress display).
    ``on_split(split, (scenes, images))``: each split's scenes and rendered images once it is written, so
    a caller (the teacher's training) can reuse them instead of rendering them again."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    total, done = sum(config.split_sizes[split] for split in SPLITS), 0
    report = report or (lambda done, total: None)
    report(0, total)
    for split in tqdm(SPLITS, desc="Dataset splits", disable=not progress):
        scenes = sample_split(split, config.split_sizes[split], config, seed)
        images: list[Image.Image] = []
        for start in range(0, len(scenes), chunk):
            images += render_many(scenes[start: start + chunk], config.image_size)[0]
            done += len(scenes[start: start + chunk])
            report(done, total)
        dataset = split_dataset(scenes, images)
        dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        if on_split is not None:
            on_split(split, (scenes, images))
    (folder / "README.md").write_text(card)
    return folder
