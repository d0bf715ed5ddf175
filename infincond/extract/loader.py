"""The input pipeline: a DataLoader whose workers read raw image bytes, decode each image once (PIL) and
run both models' image plans on it, so the forward pass never waits on PIL.

Each dataset item is a whole batch (one Arrow read per batch); the DataLoader runs with
``batch_size=None``. An image that cannot be read is reported in the batch's ``failed`` list and left out
of its tensors, never zero-filled.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data import ImageSource, to_rgb
from ..regions import image_views
from .preprocess import ImagePlan


@dataclass(frozen=True)
class ModelInput:
    """One model's side of a batch: its plan and how many views of each image it sees (1, or the whole
    image plus a grid of crops, see :func:`~infincond.regions.image_views`)."""

    plan: ImagePlan
    grid_size: int = 0


def raw_image_column(source: ImageSource):
    """The sample's image column with decoding turned off: rows give {"bytes", "path"} (or what the column
    holds when it is not an ``Image`` feature)."""
    import datasets

    table = source.dataset.select_columns([source.image_column])
    feature = table.features[source.image_column]
    if isinstance(feature, datasets.Image) and feature.decode:
        table = table.cast_column(source.image_column, datasets.Image(mode=feature.mode, decode=False))
    return table


def _open(value: object) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    if not isinstance(value, dict):
        raise TypeError(f"cannot read an image from a {type(value).__name__}")
    if value.get("bytes") is not None:
        return Image.open(io.BytesIO(value["bytes"]))
    path = value.get("path")
    if path is None:
        raise ValueError("the row has neither image bytes nor a path")
    if os.path.exists(path):
        return Image.open(path)
    import datasets  # a remote path (hf://...): let the library fetch it

    return datasets.Image().decode_example({"path": path, "bytes": None})


def decode_image(value: object, needed: Callable[[int, int], tuple[int, int] | None] | None = None,
                 mode: str | None = None) -> tuple[Image.Image, tuple[int, int], tuple[float, ...] | None]:
    """Decode one stored image as the datasets library does (load, EXIF orientation, feature mode), then RGB.

    ``needed(width, height)``: the size the image must keep; a JPEG at least twice that size is decoded in
    draft mode (a 1/2, 1/4 or 1/8 DCT scale that stays at least that size). Returns (image, original
    (width, height), the box of the original in the decoded image, None unless drafted).
    """
    image = _open(value)
    original, box = image.size, None
    rotated = image.getexif().get(Image.ExifTags.Base.Orientation) is not None
    if needed is not None and not rotated and getattr(image, "format", None) == "JPEG":
        target = needed(*original)
        drafted = image.draft(None, target) if target is not None else None
        if drafted is not None and image.size != original:
            box = drafted[1]
    image.load()
    if rotated:
        image = ImageOps.exif_transpose(image)
        original = image.size
    if mode and mode != image.mode:
        image = image.convert(mode)
    return to_rgb(image), original, box


class ImageBatches(torch.utils.data.Dataset):
    """Item ``i``: batch ``i`` of the run, decoded once and prepared for every model.

    ``batches``: sample positions per batch. Items are dicts: ``index`` (int), ``positions`` (B,) int64 of
    the images that decoded, ``pixels`` and ``layout``: one flat tensor holding every model input's pixels
    ((B * views, 3, H, W), uint8 for fast plans; :func:`batch_pixels` gives them), ``failed`` a list of
    (position, error message).
    """

    def __init__(self, source: ImageSource, batches: Sequence[np.ndarray], inputs: Sequence[ModelInput],
                 draft: bool = False) -> None:
        import datasets

        self.table = raw_image_column(source)
        self.column = source.image_column
        feature = source.dataset.features[source.image_column]
        self.mode = feature.mode if isinstance(feature, datasets.Image) else None
        self.rows = source.image_ids
        self.batches = list(batches)
        self.inputs = list(inputs)
        self.draft = draft and all(i.plan.fast and i.grid_size == 0 for i in inputs)

    def __len__(self) -> int:
        return len(self.batches)

    def _needed(self, width: int, height: int) -> tuple[int, int] | None:
        """The size every model's resize needs from a (width, height) image; None = decode in full."""
        sizes = [i.plan.needed_size(width, height) for i in self.inputs]
        if any(size is None for size in sizes):
            return None
        return max(s[0] for s in sizes), max(s[1] for s in sizes)

    def _prepare(self, decoded: tuple[Image.Image, tuple[int, int], tuple | None]) -> list[np.ndarray]:
        image, original, box = decoded
        done: dict[ImagePlan, np.ndarray] = {}
        array = np.array(image, dtype=np.uint8) if box is None else None  # one conversion for every plan
        out = []
        for model_input in self.inputs:
            if model_input.grid_size:
                out.append(np.stack([model_input.plan.pixels(view)
                                     for view in image_views(image, model_input.grid_size)]))
                continue
            if model_input.plan not in done:  # two models with the same plan share the work
                done[model_input.plan] = model_input.plan.pixels(image, original, box, array)[None]
            out.append(done[model_input.plan])
        return out

    def __getitem__(self, index: int) -> dict:
        positions = self.batches[index]
        values = self.table[self.rows[positions].tolist()][self.column]
        kept: list[int] = []
        per_input: list[list[np.ndarray]] = [[] for _ in self.inputs]
        failed: list[tuple[int, str]] = []
        for position, value in zip(positions.tolist(), values, strict=True):
            try:
                decoded = decode_image(value, self._needed if self.draft else None, self.mode)
            except Exception as error:  # noqa: BLE001 - any image that cannot be read is skipped and reported
                failed.append((position, f"{type(error).__name__}: {error}"))
                continue
            kept.append(position)
            for bucket, tensor in zip(per_input, self._prepare(decoded), strict=True):
                bucket.append(tensor)
        storage, layout = _one_storage(per_input)
        return {"index": index, "positions": np.asarray(kept, dtype=np.int64), "pixels": storage, "layout": layout,
                "failed": failed}


def _one_storage(per_input: list[list[np.ndarray]]) -> tuple[torch.Tensor, list[tuple]]:
    """Every model input's arrays, concatenated, in one flat uint8 tensor, and where each lies in it
    ((offset, shape, dtype) per input, 64-byte aligned): a batch crosses from its worker to the main process
    as one shared-memory segment, one file descriptor. numpy, not torch.cat: one thread, no intra-op thread
    pool contending with the other workers."""
    layout, total = [], 0
    for bucket in per_input:
        shape = (sum(len(a) for a in bucket), *bucket[0].shape[1:]) if bucket else (0,)
        dtype = bucket[0].dtype if bucket else np.dtype(np.uint8)
        layout.append((total, shape, dtype.str))
        total += -(-int(np.prod(shape)) * dtype.itemsize // 64) * 64
    storage = torch.empty(total, dtype=torch.uint8)
    flat = storage.numpy()
    for (offset, shape, dtype), bucket in zip(layout, per_input, strict=True):
        if bucket:
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            np.concatenate(bucket, out=flat[offset : offset + size].view(dtype).reshape(shape))
    return storage, layout


def batch_pixels(item: dict) -> list[torch.Tensor]:
    """A batch's pixel tensors, one per model input ((B * views, 3, H, W)), as views of its one storage."""
    out = []
    for offset, shape, dtype in item["layout"]:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out.append(item["pixels"][offset : offset + size].view(torch.from_numpy(np.empty(0, dtype)).dtype).view(shape))
    return out


def make_loader(dataset: ImageBatches, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over whole batches, in order; workers prefetch a few batches each."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None, persistent_workers=False,
    )
