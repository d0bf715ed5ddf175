"""ImageSource: an image classification dataset from the Hub or a local path, its image and label
columns detected from the features, a fixed-seed sample and a fixed train / validation split."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .checks import check_integer, check_number
from .errors import ColumnDetectionError, ConfigError, LoadError
from .hub import check_ref, is_local, loading, local_files

_LABEL_NAMES = ("label", "labels", "fine_label", "class", "category", "target", "coarse_label")
_IMAGE_NAMES = ("image", "img", "images", "picture", "photo")
_DATA_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}


@dataclass
class DataConfig:
    """Which dataset to load and how to sample it.

    ``image_column`` / ``label_column``: "auto" detects them from the features (``Image``, ``ClassLabel``);
    ``label_column="none"`` runs without labels. ``samples``: how many images to draw (None = all).
    """

    dataset: str = field(metadata={"help": "Hub dataset id, image folder, data file or save_to_disk folder."})
    config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    split: str | None = field(default=None, metadata={"help": "Dataset split (default: train, else the first)."})
    revision: str | None = field(default=None, metadata={"help": "Dataset revision (branch, tag or commit)."})
    image_column: str = field(default="auto", metadata={"help": "'auto' (an Image feature) or a column name."})
    label_column: str = field(default="auto", metadata={"help": "'auto' (a ClassLabel), a column name, or 'none' "
                                                                  "for no labels."})
    samples: int | None = field(default=1000, metadata={"help": "Images to sample (None: all)."})
    val_fraction: float = field(default=0.2, metadata={"help": "Share of the sample held out for validation."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample and of the split."})

    def __post_init__(self) -> None:
        if self.samples is not None:
            self.samples = check_integer("samples", self.samples, 2)
        self.val_fraction = check_number("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        self.seed = check_integer("seed", self.seed, 0)

    def to_dict(self) -> dict:
        return asdict(self)


def _grey_scale(mode: str, pixels: np.ndarray) -> float:
    """What maps a greyscale image's values onto 0-255 by its bit depth, so that brightness is kept: 16-bit
    modes divide by 257 (65535 -> 255); a 32-bit integer image by the depth its values need (8, 16 or 32
    bits); a float image is read as 0-1 when it stays there, else as 0-255."""
    if mode.startswith("I;16"):
        return 255.0 / 65535.0
    high = float(pixels.max(initial=0.0))
    if mode == "F":
        return 255.0 if high <= 1.0 else 1.0
    depth = 8 if high <= 255 else 16 if high <= 65535 else 32
    return 255.0 / (2.0**depth - 1.0)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: transparency composited on white, palettes expanded, 16-bit, 32-bit and
    float greyscale converted by their bit depth (a mean grey stays that grey)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(pixels * _grey_scale(image.mode, pixels)), 0, 255)
                               .astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(image: Image.Image | str | os.PathLike, where: str = "The image") -> Image.Image:
    """An image (a PIL image or a file path) decoded as 8-bit RGB; an unreadable or corrupt one raises a
    :class:`LoadError` that names it."""
    try:
        if not isinstance(image, Image.Image):
            with Image.open(os.fspath(image)) as opened:
                opened.load()
                return to_rgb(opened)
        image.load()
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise LoadError(f"{where} cannot be read as an image ({error}). Check the file, or leave it out.") from error


def detect_columns(features: dict, image_column: str = "auto", label_column: str = "auto") -> tuple[str, str | None]:
    """Find the image column (an ``Image`` feature) and the label column (a ``ClassLabel``, else an
    integer or string column with a usual label name). Returns (image_column, label_column or None)."""
    from datasets import ClassLabel, Value
    from datasets import Image as ImageFeature

    names = list(features)
    if image_column == "auto":
        images = [n for n in names if isinstance(features[n], ImageFeature)]
        images += [n for n in names if n.lower() in _IMAGE_NAMES and n not in images]
        if not images:
            raise ColumnDetectionError(
                f"No image column found among {names}: the dataset needs a column with the `Image` feature. "
                "Name it explicitly with image_column= (CLI: --image-column)."
            )
        image_column = images[0]
    elif image_column not in features:
        raise ColumnDetectionError(f"Image column {image_column!r} is not in the dataset's columns {names}.")

    if label_column.lower() == "none":
        return image_column, None
    if label_column == "auto":
        labels = [n for n in names if isinstance(features[n], ClassLabel)]
        labels += [
            n
            for n in names
            if n.lower() in _LABEL_NAMES
            and n not in labels
            and isinstance(features[n], Value)
            and (features[n].dtype.startswith("int") or features[n].dtype in ("string", "large_string"))
        ]
        if not labels:
            raise ColumnDetectionError(
                f"No label column found among {names}: expected a `ClassLabel` feature or a column named "
                f"one of {_LABEL_NAMES}. Name it with label_column= (CLI: --label-column), or pass "
                "label_column='none' to distil without labels."
            )
        label_column = labels[0]
    elif label_column not in features:
        raise ColumnDetectionError(f"Label column {label_column!r} is not in the dataset's columns {names}.")
    return image_column, label_column


def _local_cache_dir(folder: Path) -> str:
    """A datasets cache folder keyed by the local dataset's files (names, sizes, modification times).

    The datasets library keys a local folder's cache on its name and declared configs, not on its files,
    so a folder rebuilt in place, or another folder with the same name, would be served stale rows."""
    import datasets

    digest = hashlib.sha256(json.dumps([str(folder.resolve()), local_files(folder)]).encode()).hexdigest()[:16]
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "infincond-local" / digest)


def _load_raw(config: DataConfig):
    """Load the dataset object (a ``datasets.Dataset``) the config names."""
    import datasets

    ref = check_ref("dataset", config.dataset)
    with loading("dataset", ref):
        if is_local(ref):
            path = Path(ref).expanduser()
            if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                                  or (path / "state.json").exists()):
                loaded = datasets.load_from_disk(str(path))
            elif path.is_file():
                builder = _DATA_FILE_BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise LoadError(f"Cannot read {ref!r}: give a folder, or a {sorted(_DATA_FILE_BUILDERS)} file.")
                loaded = datasets.load_dataset(builder, data_files=str(path))
            else:
                loaded = datasets.load_dataset(str(path), config.config_name, cache_dir=_local_cache_dir(path))
        else:
            loaded = datasets.load_dataset(ref, config.config_name, revision=config.revision)
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = config.split or ("train" if "train" in loaded else splits[0])
        if split not in loaded:
            raise ConfigError(f"Split {split!r} is not in {ref!r}; its splits are {splits}.")
        return loaded[split], split
    return loaded, config.split or "train"


class ImageSource:
    """A sampled image classification dataset, ready to be batched through a teacher and an encoder.

    ``image_ids`` (N,) are row indices in the loaded split; ``is_val`` (N,) marks the validation part;
    ``labels`` (N,) int64 dataset label ids (or None); ``label_names`` the dataset's class names.
    """

    def __init__(self, dataset, config: DataConfig, split: str, image_column: str, label_column: str | None) -> None:
        self.dataset = dataset
        self.config = config
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        n_rows = len(dataset)
        if n_rows == 0:
            raise ConfigError(f"Dataset {config.dataset!r} split {split!r} is empty.")
        rng = np.random.default_rng(config.seed)
        n = n_rows if config.samples is None else min(config.samples, n_rows)
        self.image_ids = np.sort(rng.permutation(n_rows)[:n]).astype(np.int64)
        n_val = max(1, round(n * config.val_fraction))
        self.is_val = np.zeros(n, dtype=bool)
        self.is_val[rng.permutation(n)[:n_val]] = True
        self.label_names, self.labels = self._read_labels()

    @classmethod
    def load(cls, config: DataConfig) -> ImageSource:
        """Load from a Hub repo id, an image folder, a data file or a ``save_to_disk`` folder."""
        dataset, split = _load_raw(config)
        image_column, label_column = detect_columns(dataset.features, config.image_column, config.label_column)
        return cls(dataset, config, split, image_column, label_column)

    def _read_labels(self) -> tuple[list[str] | None, np.ndarray | None]:
        from datasets import ClassLabel

        if self.label_column is None:
            return None, None
        feature = self.dataset.features[self.label_column]
        values = self.dataset.select_columns([self.label_column]).select(self.image_ids)[self.label_column]
        if isinstance(feature, ClassLabel):
            return list(feature.names), np.asarray(values, dtype=np.int64)
        column = self.dataset.unique(self.label_column)
        if all(isinstance(v, str) for v in column):
            names = sorted(column)
            lookup = {name: i for i, name in enumerate(names)}
            return names, np.asarray([lookup[v] for v in values], dtype=np.int64)
        ids = sorted(int(v) for v in column)
        return [str(i) for i in range(max(ids) + 1)], np.asarray(values, dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """The datasets library's fingerprint of the loaded split (changes with its content)."""
        return str(getattr(self.dataset, "_fingerprint", "unknown"))

    def __len__(self) -> int:
        return len(self.image_ids)

    def images(self, positions: Sequence[int] | np.ndarray) -> list[Image.Image]:
        """RGB images at ``positions`` (indices into this sample, not dataset rows)."""
        return self.images_at_rows(self.image_ids[np.asarray(positions, dtype=np.int64)])

    def images_at_rows(self, rows: Sequence[int] | np.ndarray) -> list[Image.Image]:
        """RGB images at dataset ``rows`` (a FeatureSet's ``image_ids``)."""
        column = self.dataset.select_columns([self.image_column]).select(np.asarray(rows, dtype=np.int64))
        return [to_rgb(image) for image in column[self.image_column]]

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, list[Image.Image]]]:
        """(positions, images) for the whole sample, in order."""
        for start in range(0, len(self), batch_size):
            positions = np.arange(start, min(start + batch_size, len(self)))
            yield positions, self.images(positions)

    def describe(self) -> dict:
        """What was loaded, for provenance and the configuration view."""
        return {
            **self.config.to_dict(),
            "split": self.split,
            "image_column": self.image_column,
            "label_column": self.label_column,
            "fingerprint": self.fingerprint,
            "n_images": len(self),
            "n_val": int(self.is_val.sum()),
        }


def load_image_source(dataset: str | os.PathLike, **settings) -> ImageSource:
    """Shorthand: ``load_image_source("user/data", samples=500)``."""
    return ImageSource.load(DataConfig(dataset=os.fspath(dataset), **settings))
