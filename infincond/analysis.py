"""What the views show, computed from a FeatureSet and a student: concept influence per class, the images
where a concept is most present, one image's contributions, disagreement subsets, and a fidelity-vs-NEC
sweep. Pure functions over arrays; the UI only turns their results into tables, plots and galleries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .distill import DistillConfig, distill_sweep
from .features import FeatureSet
from .linear import Contribution, LinearStudent, strongest
from .metrics import Metrics, accuracy_by_class, evaluate_student, finite_or_none


def class_presence(features: FeatureSet, student: LinearStudent) -> np.ndarray:
    """Mean standardised presence (C, K) of each concept over the images the teacher assigns to each class
    (0 for a class it never predicts). It depends on the features and the standardisation only, so it is
    the same for every student of one distillation: compute it once. A concept's influence on a class is
    the class's weight on it times this (:func:`influence`)."""
    predicted = features.teacher_logits.argmax(1)
    order = np.argsort(predicted, kind="stable")
    return mean_by_class(student.standardise(features.concept_scores[order]), predicted[order],
                         features.teacher_logits.shape[1])


def mean_by_class(standardised: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """The mean row (C, K) float32 of ``standardised`` (N, K) per class of ``classes`` (N,) (0 for a class
    without rows): rows sorted by class are summed in one pass of ``reduceat`` (float64), others through a
    one-hot product (float32, no copy of the rows)."""
    classes = np.asarray(classes)
    means = np.zeros((num_classes, standardised.shape[1]), dtype=np.float32)
    if not len(classes):
        return means
    if np.any(np.diff(classes) < 0):
        onehot = np.zeros((num_classes, len(classes)), dtype=np.float32)
        onehot[classes, np.arange(len(classes))] = 1.0
        counts = onehot.sum(1)
        np.divide(onehot @ np.asarray(standardised, dtype=np.float32), counts[:, None], out=means,
                  where=counts[:, None] > 0)
        return means
    present, starts, counts = np.unique(classes, return_index=True, return_counts=True)
    sums = np.add.reduceat(standardised, starts, axis=0, dtype=np.float64)
    means[present] = sums / counts[:, None]
    return means


def influence(weight: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """Influence (C, K) of each concept on each class: the class's weight on it (C, K) times its mean
    standardised presence on the class's images (C, K), from :func:`class_presence`."""
    return weight * presence


def top_concepts(influence: np.ndarray, n: int = 20, class_id: int | None = None) -> np.ndarray:
    """Indices of the ``n`` concepts with the largest |influence| (on one class, or on any class)."""
    return strongest(influence[class_id] if class_id is not None else np.abs(influence).max(0), n)


def images_with_concept(features: FeatureSet, concept: int, n: int = 12,
                        rows: np.ndarray | None = None) -> np.ndarray:
    """Positions (into the FeatureSet) of the ``n`` images where ``concept`` is most present."""
    positions = np.arange(len(features.concept_scores)) if rows is None else np.asarray(rows)
    scores = features.concept_scores[positions, concept]
    return positions[np.argsort(-scores, kind="stable")[:n]]


def image_contributions(features: FeatureSet, student: LinearStudent, position: int, class_id: int,
                        top_k: int = 6) -> list[Contribution]:
    """The concepts that contribute most (by |weight x standardised presence|) to ``class_id`` on one image
    (a FeatureSet position), each with the region where it was found."""
    regions = features.region_boxes[features.best_region[position]]
    return student.contributions(features.concept_scores[position], class_id, features.concepts, regions, top_k)


def disagreement_subsets(features: FeatureSet, student: LinearStudent, rows: np.ndarray) -> list[dict]:
    """The groups of ``rows`` (FeatureSet positions) where student and teacher differ, largest first:
    each {"teacher": class, "student": class, "positions": array}."""
    rows = np.asarray(rows)
    teacher = features.teacher_logits[rows].argmax(1)
    predicted = student.logits(features.concept_scores[rows]).argmax(1)
    groups: dict[tuple[int, int], list[int]] = {}
    for position, t, s in zip(rows, teacher, predicted, strict=True):
        if t != s:
            groups.setdefault((int(t), int(s)), []).append(int(position))
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [{"teacher": features.class_names[t], "student": features.class_names[s], "positions": np.asarray(p)}
            for (t, s), p in ordered]


@dataclass
class SweepPoint:
    """One student of a sparsity sweep and its validation metrics."""

    nec_target: int
    student: LinearStudent
    metrics: Metrics


def nec_sweep(features: FeatureSet, necs: Sequence[int] = (1, 2, 3, 5, 10, 20), config: DistillConfig | None = None,
              progress: bool = False) -> list[SweepPoint]:
    """Students at several NEC targets on the same features (the fidelity-vs-NEC curve to pick from), all
    from one L1 path."""
    students = distill_sweep(features, necs, config or DistillConfig(), progress=progress)
    return [SweepPoint(student.config.nec, student, evaluate_student(features, student)) for student in students]


def class_summary(features: FeatureSet) -> tuple[float | None, list[dict]]:
    """The teacher's accuracy against the labels (None without labels) and, per class, the images labelled
    with it, how many the teacher gives it, and the teacher's accuracy on it."""
    predicted, labels = features.teacher_logits.argmax(1), features.labels_as_classes
    accuracy, per_class = accuracy_by_class(predicted, labels, features.num_classes)
    return accuracy, [{"class": name, "labelled": int((labels == c).sum()), "predicted": int((predicted == c).sum()),
                       "accuracy": finite_or_none(per_class[c])} for c, name in enumerate(features.class_names)]


def class_examples(features: FeatureSet, per_class: int = 2) -> list[tuple[int, int]]:
    """(position, class) of the first ``per_class`` images of each class (by label, else by the teacher)."""
    labels = features.labels_as_classes
    classes = labels if (labels >= 0).any() else features.teacher_logits.argmax(1)
    return [(int(p), c) for c in range(features.num_classes) for p in np.nonzero(classes == c)[0][:per_class]]


@dataclass
class ImageReport:
    """Why the student and the teacher classify one image as they do (FeatureSet position ``position``)."""

    position: int
    student_class: int
    teacher_class: int
    label: int
    contributions: list[Contribution]


def image_report(features: FeatureSet, student: LinearStudent, position: int) -> ImageReport:
    """Both predictions for one image, its label (-1 if none) and the concepts behind the student's."""
    student_class = int(student.logits(features.concept_scores[position : position + 1])[0].argmax())
    return ImageReport(position, student_class, int(features.teacher_logits[position].argmax()),
                       int(features.labels_as_classes[position]),
                       image_contributions(features, student, position, student_class))
