"""Metrics of a student against its teacher (and against labels where they exist), in one shape: the
:class:`Metrics` attributes, and :meth:`Metrics.to_dict` with the same names, which is what logs, saved
students, cards, the CLI and the app show."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .groups import Groups
from .linear import log_softmax, softmax


def finite_or_none(value: float | None) -> float | None:
    """A JSON-safe number: None where it is NaN or infinite."""
    return float(value) if value is not None and np.isfinite(value) else None


def worst_group_accuracy(metrics: dict | None) -> float | None:
    """The worst group's accuracy in a metrics dict (:meth:`Metrics.to_dict`; None without groups)."""
    return ((metrics or {}).get("groups") or {}).get("worst_group_accuracy")


def percent(value: float | None, width: int = 0) -> str:
    """A share as people read it, "93.5%" (right-aligned in ``width`` characters); "n/a" for None or NaN."""
    text = "n/a" if finite_or_none(value) is None else f"{100 * float(value):.1f}%"
    return text.rjust(width)


@dataclass
class Metrics:
    """How well a student mimics its teacher on a set of images.

    fidelity: top-1 agreement with the teacher. kl: mean KL(teacher || student) at T=1, in nats.
    accuracy / teacher_accuracy: against labels mapped onto the teacher's classes (None when no image has
    such a label). Per class (C,): ``agreement`` (of the images the teacher gives the class, the share the
    student also does), ``precision`` (of the images the student gives it, the share the teacher does),
    ``class_accuracy`` / ``teacher_class_accuracy`` against labels (NaN where a class has no labelled
    image). confusion (C, C): rows = teacher prediction, columns = student prediction.
    disagreement_ids: image ids where the two predictions differ. nec_per_class (C,) effective concepts.
    With :class:`~infincond.groups.Groups` (class x an attribute): ``group_names`` (G,), ``group_size``
    (G,), ``group_accuracy`` / ``teacher_group_accuracy`` (G,) (NaN for a group without images here), and
    the worst group of each (:attr:`worst_group`, :attr:`teacher_worst_group`).
    """

    n_images: int
    n_labelled: int
    fidelity: float
    kl: float
    accuracy: float | None
    teacher_accuracy: float | None
    class_names: list[str]
    agreement: np.ndarray
    precision: np.ndarray
    class_accuracy: np.ndarray
    teacher_class_accuracy: np.ndarray
    confusion: np.ndarray
    disagreement_ids: np.ndarray
    nec_per_class: np.ndarray
    group_attribute: str | None = None
    group_names: tuple[str, ...] = ()
    group_size: np.ndarray | None = None
    group_accuracy: np.ndarray | None = None
    teacher_group_accuracy: np.ndarray | None = None

    @property
    def nec(self) -> float:
        return float(np.mean(self.nec_per_class))

    @staticmethod
    def _worst(accuracy: np.ndarray | None, names: tuple[str, ...]) -> tuple[str, float] | None:
        if accuracy is None or not np.isfinite(accuracy).any():
            return None
        g = int(np.nanargmin(accuracy))
        return names[g], float(accuracy[g])

    @property
    def worst_group(self) -> tuple[str, float] | None:
        """The student's worst group and its accuracy (None without groups)."""
        return self._worst(self.group_accuracy, self.group_names)

    @property
    def teacher_worst_group(self) -> tuple[str, float] | None:
        """The teacher's worst group and its accuracy (None without groups)."""
        return self._worst(self.teacher_group_accuracy, self.group_names)

    def groups_dict(self) -> dict | None:
        """The groups' figures, JSON-ready: the attribute, the worst group of student and teacher, and per
        group its size and both accuracies; None without groups."""
        if self.group_accuracy is None:
            return None
        worst, teacher_worst = self.worst_group, self.teacher_worst_group
        return {"attribute": self.group_attribute,
                "worst_group": worst[0] if worst else None, "worst_group_accuracy": worst[1] if worst else None,
                "teacher_worst_group": teacher_worst[0] if teacher_worst else None,
                "teacher_worst_group_accuracy": teacher_worst[1] if teacher_worst else None,
                "per_group": {name: {"n": int(self.group_size[g]), "accuracy": finite_or_none(self.group_accuracy[g]),
                                     "teacher_accuracy": finite_or_none(self.teacher_group_accuracy[g])}
                              for g, name in enumerate(self.group_names)}}

    def to_dict(self) -> dict:
        """The metrics as JSON-ready values (NaN becomes None): the headline numbers, and per class the
        agreement with the teacher and the accuracy against labels."""
        return {
            "fidelity": finite_or_none(self.fidelity),
            "kl": finite_or_none(self.kl),
            "accuracy": finite_or_none(self.accuracy),
            "teacher_accuracy": finite_or_none(self.teacher_accuracy),
            "nec": self.nec,
            "n_images": self.n_images,
            "n_labelled": self.n_labelled,
            "n_disagreements": int(len(self.disagreement_ids)),
            "per_class": {
                name: {
                    "agreement": finite_or_none(self.agreement[c]),
                    "accuracy": finite_or_none(self.class_accuracy[c]),
                }
                for c, name in enumerate(self.class_names)
            },
            "groups": self.groups_dict(),
        }


def format_groups(groups: dict, indent: str = "  ") -> list[str]:
    """A metrics dict's ``groups`` (:meth:`Metrics.groups_dict`) as lines: the worst group, then every
    group's images and accuracy, teacher beside student."""
    lines = [f"{indent}worst group       {percent(groups['worst_group_accuracy'])}  ({groups['worst_group']}; the "
             f"teacher's: {groups['teacher_worst_group']} {percent(groups['teacher_worst_group_accuracy'])})",
             f"{indent}per group of class x {groups['attribute']} (images, teacher, student):"]
    return lines + [
        f"{indent}  {name:<28} {g['n']:>6}  {percent(g['teacher_accuracy'], 6)}  {percent(g['accuracy'], 6)}"
        for name, g in groups["per_group"].items()
    ]


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def accuracy_by_class(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float | None, np.ndarray]:
    """The accuracy of ``predictions`` (N,) against ``labels`` (N,) (class ids, -1 where unknown: left out):
    overall (None without a known label) and per class (C,) (NaN for a class without a labelled image)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    known = labels >= 0
    hits = predictions[known] == labels[known]
    per_class = _safe_ratio(np.bincount(labels[known], weights=hits, minlength=num_classes),
                            np.bincount(labels[known], minlength=num_classes).astype(float))
    return (float(hits.mean()) if known.any() else None), per_class


def teacher_terms(teacher_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's predictions (N,), probabilities (N, C) and mean entropy part of the KL (N,): the part
    of :func:`evaluate` that does not depend on the student, to compute once when it runs often."""
    p_teacher = softmax(teacher_logits.astype(np.float64))
    return teacher_logits.argmax(1), p_teacher, np.sum(p_teacher * np.log(np.clip(p_teacher, 1e-300, None)), axis=1)


def evaluate(student_logits: np.ndarray, teacher_logits: np.ndarray, labels_as_classes: np.ndarray | None,
             image_ids: np.ndarray, class_names: list[str], nec_per_class: np.ndarray,
             teacher: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, groups: Groups | None = None) -> Metrics:
    """Compare student and teacher logits (N, C); ``labels_as_classes`` (N,) holds teacher-class ids of the
    labels, -1 where unknown. ``teacher``: :func:`teacher_terms` of these teacher logits, if already known.
    ``groups`` (of these N images): per-group accuracies and the worst group too."""
    n, c = teacher_logits.shape
    teacher_pred, p_teacher, neg_entropy = teacher or teacher_terms(teacher_logits)
    student_pred = student_logits.argmax(1)
    agree = teacher_pred == student_pred
    kl = float(np.mean(neg_entropy - np.sum(p_teacher * log_softmax(student_logits), axis=1)))

    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (teacher_pred, student_pred), 1)
    precision = _safe_ratio(np.diag(confusion).astype(float), confusion.sum(0).astype(float))
    agreement = _safe_ratio(np.diag(confusion).astype(float), confusion.sum(1).astype(float))

    labels = np.full(n, -1) if labels_as_classes is None else np.asarray(labels_as_classes)
    n_labelled = int((labels >= 0).sum())
    accuracy, class_accuracy = accuracy_by_class(student_pred, labels, c)
    teacher_accuracy, teacher_class_accuracy = accuracy_by_class(teacher_pred, labels, c)
    grouped = {}
    if groups is not None:
        size, student_group_hits, teacher_group_hits = group_hits(groups.codes, len(groups.names), labels,
                                                                  student_pred, teacher_pred)
        grouped = {"group_attribute": groups.attribute, "group_names": groups.names, "group_size": size,
                   "group_accuracy": _safe_ratio(student_group_hits, size),
                   "teacher_group_accuracy": _safe_ratio(teacher_group_hits, size)}
    return Metrics(
        n_images=n,
        n_labelled=n_labelled,
        fidelity=float(agree.mean()) if n else float("nan"),
        kl=kl,
        accuracy=accuracy,
        teacher_accuracy=teacher_accuracy,
        class_names=list(class_names),
        agreement=agreement,
        precision=precision,
        class_accuracy=class_accuracy,
        teacher_class_accuracy=teacher_class_accuracy,
        confusion=confusion,
        disagreement_ids=np.asarray(image_ids)[~agree],
        nec_per_class=np.asarray(nec_per_class),
        **grouped,
    )


def group_hits(codes: np.ndarray, n_groups: int, labels: np.ndarray,
               *predictions: np.ndarray) -> tuple[np.ndarray, ...]:
    """The images of each group (G,) float, and for each of ``predictions`` (N,) how many of them it gets
    right (G,); ``codes`` (N,) group ids, -1 outside every group."""
    inside = np.asarray(codes) >= 0
    ids = np.asarray(codes)[inside]
    size = np.bincount(ids, minlength=n_groups).astype(float)
    return (size, *(np.bincount(ids, weights=(p[inside] == labels[inside]), minlength=n_groups) for p in predictions))


def evaluate_student(features, student, split: str = "val", groups: Groups | None = None) -> Metrics:
    """Metrics of a :class:`~infincond.linear.LinearStudent` on a FeatureSet's "val", "train" or "all" rows
    (``groups``: of every row of the FeatureSet)."""
    rows = {"val": features.is_val, "train": ~features.is_val, "all": np.ones_like(features.is_val)}[split]
    return evaluate(student.logits(features.concept_scores[rows]), features.teacher_logits[rows],
                    features.labels_as_classes[rows], features.image_ids[rows], features.class_names,
                    student.nec_per_class, groups=None if groups is None else groups.subset(rows))


class Evaluator:
    """Metrics of many candidate weights on fixed rows (what previews and refits need, fast), with the
    rows' groups (``groups``: of every row of ``features``) when given: the rows'
    standardised scores (column-major, so that the concepts in use are read contiguously) and the teacher's
    part of the metrics are computed once."""

    def __init__(self, features, rows: np.ndarray, student, groups: Groups | None = None) -> None:
        self.rows = rows
        self.x = np.asfortranarray(student.standardise(features.concept_scores[rows]))
        self.student = student
        self.teacher_logits = features.teacher_logits[rows]
        self.teacher = teacher_terms(self.teacher_logits)
        self.labels = features.labels_as_classes[rows]
        self.image_ids = features.image_ids[rows]
        self.class_names = list(features.class_names)
        self.groups = None if groups is None else groups.subset(rows)

    def metrics(self, weight: np.ndarray, bias: np.ndarray) -> Metrics:
        """Metrics of the student with these weight (C, K) and bias (C,)."""
        logits = self.student.logits_of_standardised(self.x, weight, bias)
        return evaluate(logits, self.teacher_logits, self.labels, self.image_ids, self.class_names,
                        np.count_nonzero(weight, axis=1), self.teacher, self.groups)
