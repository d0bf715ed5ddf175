"""Regions of an image as the concept encoder sees it: its centred square (what a CLIP-style processor's
centre crop keeps), a grid of boxes over that square in [0, 1] fractions, the crops they cut, and a box
mapped back to the image's pixels. One home for this geometry: the encoder, the image loader, a student's
contributions and the app's pictures all read it from here."""

from __future__ import annotations

import numpy as np
from PIL import Image


def grid_boxes(rows: int, cols: int) -> np.ndarray:
    """Boxes of a rows x cols grid, row-major, in [0, 1] coordinates. Shape (rows * cols, 4)."""
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([xs / cols, ys / rows, (xs + 1) / cols, (ys + 1) / rows], -1).reshape(-1, 4).astype(np.float32)


def image_views(image: Image.Image, grid_size: int = 0) -> list[Image.Image]:
    """The encoder inputs of one image: the image itself, then (``grid_size`` > 0) the cells of a
    grid_size x grid_size grid over its centred square (the square the processor's centre crop sees),
    row-major, matching :func:`grid_boxes`."""
    if grid_size <= 0:
        return [image]
    w, h = image.size
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    crops = [image.crop((x0 + xa * side, y0 + ya * side, x0 + xb * side, y0 + yb * side))
             for xa, ya, xb, yb in grid_boxes(grid_size, grid_size)]
    return [image, *crops]


def box_on_image(box: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Map a region box from the encoder's centred square crop to pixel coordinates of the original image.

    box: (4,) (x0, y0, x1, y1) in [0, 1]. image_size: (width, height). CLIP-style processors resize
    the short side and crop the centre square, so that square is what the box refers to.
    """
    width, height = image_size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    x0, y0, x1, y1 = (float(v) for v in box)
    return (left + x0 * side, top + y0 * side, left + x1 * side, top + y1 * side)
