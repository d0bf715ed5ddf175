"""Groups of images, for worst-group accuracy: each labelled image's class crossed with the value of an
attribute, read from a dataset column (``background``: "circle · water", "circle · grass", ...) or from
a concept's presence ("circle · 'water' present" / "absent"). Metrics report the accuracy of every
group and the worst one (:func:`infincond.metrics.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

#: Integer columns with at most this many distinct values count as categorical.
MAX_INTEGER_CATEGORIES = 32


@dataclass(frozen=True)
class Groups:
    """Which group each of N images is in. ``codes`` (N,) int64 index ``names`` ("circle · water"), -1 for
    an image without a label among the teacher's classes (in no group). ``attribute`` names what the class
    is crossed with (a column's name, or "'water' present / absent")."""

    attribute: str
    names: tuple[str, ...]
    codes: np.ndarray

    def subset(self, rows: np.ndarray) -> Groups:
        """The groups of the images at ``rows`` (a boolean mask or positions)."""
        return Groups(self.attribute, self.names, np.asarray(self.codes)[rows])

    def to_dict(self) -> dict:
        return {"attribute": self.attribute, "names": list(self.names)}


def cross(labels_as_classes: np.ndarray, class_names: Sequence[str], values: Sequence[str],
          attribute: str) -> Groups:
    """Groups of class x value: ``labels_as_classes`` (N,) teacher-class ids (-1 unknown), ``values`` (N,)
    the attribute's value of each image, as text. Groups are named "class · value", in class order, then
    value order of first appearance sorted."""
    labels = np.asarray(labels_as_classes)
    values = np.asarray([str(v) for v in values], dtype=object)
    if len(values) != len(labels):
        raise ConfigError(f"The attribute {attribute!r} has {len(values)} values for {len(labels)} images.")
    known = labels >= 0
    if not known.any():
        raise ConfigError(f"Groups are class x {attribute}, but no image has a label among the teacher's classes: "
                          "load a dataset (or a split) with labels to measure worst-group accuracy.")
    levels = sorted(set(values[known]))
    level_of = {v: i for i, v in enumerate(levels)}
    pair = np.full(len(labels), -1, dtype=np.int64)
    pair[known] = labels[known] * len(levels) + np.array([level_of[v] for v in values[known]], dtype=np.int64)
    present = np.unique(pair[known])
    index = np.full(len(class_names) * len(levels), -1, dtype=np.int64)
    index[present] = np.arange(len(present))
    codes = np.where(pair >= 0, index[np.clip(pair, 0, None)], -1)
    names = tuple(f"{class_names[p // len(levels)]} · {levels[p % len(levels)]}" for p in present)
    return Groups(attribute, names, codes)


def categorical_columns(dataset, exclude: Sequence[str | None] = ()) -> list[str]:
    """The columns of a ``datasets.Dataset`` that can define groups: class labels, text, booleans, and
    integers with at most :data:`MAX_INTEGER_CATEGORIES` values (``exclude``: the image and label columns)."""
    from datasets import ClassLabel, Value

    out = []
    for name, feature in dataset.features.items():
        if name in exclude:
            continue
        if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype in
                                               ("string", "large_string", "bool")):
            out.append(name)
        elif isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
            if len(dataset.unique(name)) <= MAX_INTEGER_CATEGORIES:
                out.append(name)
    return out


def column_values(source, image_ids: np.ndarray, column: str) -> list[str]:
    """The value of ``column`` for each dataset row of ``image_ids`` (N,), as text (a class label's name).
    A column that is missing or not categorical, or a row without a value, is a ConfigError that says
    what to pass."""
    from datasets import ClassLabel

    dataset = source.dataset
    usable = categorical_columns(dataset, exclude=(source.image_column, source.label_column))
    if column not in usable:
        what = "is not a column of the dataset" if column not in dataset.features else "is not categorical"
        raise ConfigError(f"The group column {column!r} {what}; pass one of {usable or '(none: no categorical column)'}"
                          " (CLI: --group-column), or none to measure groups by concept presence.")
    # Read through Arrow, in one piece: iterating a datasets Column goes row by row (0.24 s for 6,000 rows).
    raw = (dataset.select_columns([column]).with_format("arrow").select(np.asarray(image_ids, dtype=np.int64))
           [column].to_pylist())
    feature = dataset.features[column]
    labels = isinstance(feature, ClassLabel)  # a ClassLabel's "no value" is -1 (any negative: no name)
    missing = [int(row) for row, v in zip(image_ids, raw, strict=True)
               if v is None or (v < 0 if labels else v == "")]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ConfigError(f"The group column {column!r} has no value for {len(missing)} of {len(raw)} images (rows "
                          f"{shown}): fill it in, or pass another column, or none to group by concept presence.")
    if labels:
        return [feature.names[v] for v in raw]
    return [str(v) for v in raw]


def groups_from_column(features, source, column: str) -> Groups:
    """Class x the values of a dataset ``column``, for every row of a FeatureSet made from ``source``."""
    values = column_values(source, features.image_ids, column)
    return cross(features.labels_as_classes, features.class_names, values, column)


def presence_split(scores: np.ndarray) -> np.ndarray:
    """Whether a concept is present (N,) bool, from its presence scores (N,): above the threshold that best
    separates the scores into two clusters (1-D two-means, started at the extremes, on the sorted scores).
    All absent when the scores are constant."""
    scores = np.asarray(scores, dtype=np.float64)
    ordered = np.sort(scores)
    if not len(ordered) or not ordered[-1] > ordered[0]:
        return np.zeros(len(scores), dtype=bool)
    total = np.concatenate([[0.0], np.cumsum(ordered)])
    low, high, n = ordered[0], ordered[-1], len(ordered)
    for _ in range(100):
        split = int(np.searchsorted(ordered, (low + high) / 2, side="right"))  # 1 <= split < n
        new = total[split] / split, (total[n] - total[split]) / (n - split)
        if new == (low, high):
            break
        low, high = new
    return scores > (low + high) / 2


def groups_from_concept(features, concept: int) -> Groups:
    """Class x whether ``concept`` (an index) is present (:func:`presence_split`), for every row."""
    present = presence_split(np.asarray(features.concept_scores[:, concept]))
    name = features.concepts[concept]
    values = np.where(present, f"'{name}' present", f"'{name}' absent")
    return cross(features.labels_as_classes, features.class_names, values, f"'{name}' present or absent")


#: How a group choice names a concept instead of a column: "concept:water".
CONCEPT_PREFIX = "concept:"


def groups_for(features, source, choice: str | None) -> Groups | None:
    """The groups a user chose: ``""`` or None (none), a dataset column's name (class x its values), or
    ``"concept:<name>"`` (class x whether that concept is present). ``source``: the dataset the features
    were made from (None: only concept groups can be made)."""
    if not choice:
        return None
    if choice.startswith(CONCEPT_PREFIX):
        name = choice[len(CONCEPT_PREFIX):].strip()
        if name not in features.concepts:
            raise ConfigError(f"Group by concept: {name!r} is not one of the features' concepts; pass "
                              f"'{CONCEPT_PREFIX}<a concept>' (e.g. '{CONCEPT_PREFIX}{features.concepts[0]}').")
        return groups_from_concept(features, features.concepts.index(name))
    if source is None:
        raise ConfigError(f"Group column {choice!r}: these features came without their dataset, so only "
                          f"'{CONCEPT_PREFIX}<a concept>' groups can be made.")
    return groups_from_column(features, source, choice)
