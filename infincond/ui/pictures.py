"""The pictures the views show: images with a concept's best region outlined, or with its presence per
region as a heat map, drawn once as PNG files shared by every session (Gradio sends a file as it is, where
it would encode a PIL image again on every event). Drawing only: what is drawn comes from the core."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import StorageError
from ..regions import box_on_image
from ..storage import atomic_write

HIGHLIGHT = (255, 196, 0)
HEAT = (239, 68, 68)


def boxed(image: Image.Image, region: tuple[float, float, float, float], scale: int = 3) -> Image.Image:
    """The image enlarged ``scale`` times with a region (fractions of the encoder's square view) outlined."""
    big = _enlarged(image, scale)
    x0, y0, x1, y1 = box_on_image(np.asarray(region), big.size)
    ImageDraw.Draw(big).rectangle([x0, y0, x1 - 1, y1 - 1], outline=HIGHLIGHT, width=max(2, scale))
    return big


def heated(image: Image.Image, values: np.ndarray, boxes: np.ndarray, scale: int = 3) -> Image.Image:
    """The image enlarged ``scale`` times with a concept's presence per region (``values`` (R,), ``boxes``
    (R, 4) in fractions of the encoder's square view) laid over it in red: each region painted with its
    value (the largest where regions overlap), smoothed, relative to the image's strongest region, at most
    65% opaque."""
    big = _enlarged(image, scale)
    side = 64
    grid = np.zeros((side, side), dtype=np.float32)
    for value, box in zip(values, boxes, strict=True):
        x0, y0, x1, y1 = (int(round(v * side)) for v in box)
        cell = (slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1)))
        grid[cell] = np.maximum(grid[cell], value)
    top = float(grid.max())
    heat = Image.fromarray(np.uint8(255 * grid / top) if top > 0 else np.zeros((side, side), np.uint8), "L")
    x0, y0, x1, y1 = box_on_image(np.array([0.0, 0.0, 1.0, 1.0]), big.size)
    heat = heat.resize((int(x1 - x0), int(y1 - y0)), Image.BILINEAR)
    alpha = Image.new("L", big.size, 0)
    alpha.paste(heat.point(lambda v: int(v * 0.65)), (int(x0), int(y0)))
    return Image.composite(Image.new("RGB", big.size, HEAT), big, alpha)


def _enlarged(image: Image.Image, scale: int) -> Image.Image:
    image = image.convert("RGB")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def drawn_once(folder: str, names: Sequence[str], read: Callable[[list[int]], list[Image.Image]],
               draw: Callable[[int, Image.Image], Image.Image]) -> list:
    """Pictures as PNG files under this process's thumbnail folder / ``folder`` (a FeatureSet's fingerprint:
    "" draws them afresh, unsaved), named ``names``: the ones not drawn yet are read in one go (``read(the
    indices)``) and drawn (``draw(index, image)``). A PIL image stands in where no file can be written."""
    paths = [thumbnail_folder() / folder / f"{name}.png" for name in names]
    out: list = [str(path) if folder and path.exists() else None for path in paths]
    missing = [i for i, item in enumerate(out) if item is None]
    for i, image in zip(missing, read(missing) if missing else [], strict=True):
        picture = draw(i, image)
        out[i] = _written(paths[i], picture) if folder else picture
    return out


def _written(path: Path, image: Image.Image) -> str | Image.Image:
    """``image`` saved as a PNG at ``path`` (atomically: a concurrent session never reads half a file), or
    the image itself where the file cannot be written (a full or read-only temporary folder)."""
    try:
        atomic_write(path, lambda handle: image.save(handle, format="PNG", compress_level=1), durable=False)
    except StorageError:
        return image
    return str(path)


@functools.cache
def thumbnail_folder() -> Path:
    """This process's own thumbnail folder (private, made once, under the temporary folder Gradio serves
    from): no other user's files, and nothing drawn by an earlier version of this code."""
    folder = Path(tempfile.mkdtemp(prefix="infincond-thumbnails-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder
