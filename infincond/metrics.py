"""Metrics of a student against its teacher (and against labels where they exist)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .distill import softmax


@dataclass
class Metrics:
    """How well a student mimics its teacher on a set of images.

    fidelity: top-1 agreement with the teacher. kl: mean KL(teacher || student) at T=1, in nats.
    student_accuracy / teacher_accuracy: against labels mapped onto the teacher's classes (None when
    no image has such a label). Per class (C,): precision / recall of the student's predictions against
    the teacher's, and accuracy of each against labels (NaN where a class has no labelled image).
    confusion (C, C): rows = teacher prediction, columns = student prediction.
    disagreement_ids: image ids where the two predictions differ. nec_per_class (C,) effective concepts.
    """

    n_images: int
    n_labelled: int
    fidelity: float
    kl: float
    student_accuracy: float | None
    teacher_accuracy: float | None
    class_names: list[str]
    precision: np.ndarray
    recall: np.ndarray
    student_class_accuracy: np.ndarray
    teacher_class_accuracy: np.ndarray
    confusion: np.ndarray
    disagreement_ids: np.ndarray
    nec_per_class: np.ndarray

    @property
    def nec(self) -> float:
        return float(np.mean(self.nec_per_class))

    def summary(self) -> dict:
        """Headline numbers as plain floats (for logs, cards and tables)."""
        return {"fidelity": self.fidelity, "kl": self.kl, "student_accuracy": self.student_accuracy,
                "teacher_accuracy": self.teacher_accuracy, "nec": self.nec, "n_images": self.n_images,
                "n_labelled": self.n_labelled, "n_disagreements": int(len(self.disagreement_ids))}

    def to_dict(self) -> dict:
        """Every field as JSON-ready Python values (NaN becomes None)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, np.ndarray):
                out[key] = [None if isinstance(v, float) and np.isnan(v) else v for v in value.tolist()] \
                    if value.ndim == 1 else value.tolist()
        return out


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def teacher_terms(teacher_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's predictions (N,), probabilities (N, C) and mean entropy part of the KL (N,): the part
    of :func:`evaluate` that does not depend on the student, to compute once when it runs often."""
    p_teacher = softmax(teacher_logits.astype(np.float64))
    return teacher_logits.argmax(1), p_teacher, np.sum(p_teacher * np.log(np.clip(p_teacher, 1e-300, None)), axis=1)


def evaluate(student_logits: np.ndarray, teacher_logits: np.ndarray, labels_as_classes: np.ndarray | None,
             image_ids: np.ndarray, class_names: list[str], nec_per_class: np.ndarray,
             teacher: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Metrics:
    """Compare student and teacher logits (N, C); ``labels_as_classes`` (N,) holds teacher-class ids of the
    labels, -1 where unknown. ``teacher``: :func:`teacher_terms` of these teacher logits, if already known."""
    n, c = teacher_logits.shape
    teacher_pred, p_teacher, neg_entropy = teacher or teacher_terms(teacher_logits)
    student_pred = student_logits.argmax(1)
    agree = teacher_pred == student_pred
    z = student_logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    kl = float(np.mean(neg_entropy - np.sum(p_teacher * log_q, axis=1)))

    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (teacher_pred, student_pred), 1)
    precision = _safe_ratio(np.diag(confusion).astype(float), confusion.sum(0).astype(float))
    recall = _safe_ratio(np.diag(confusion).astype(float), confusion.sum(1).astype(float))

    labels = np.full(n, -1) if labels_as_classes is None else np.asarray(labels_as_classes)
    known = labels >= 0
    n_labelled = int(known.sum())
    per_class_count = np.bincount(labels[known], minlength=c).astype(float)
    student_hits = np.bincount(labels[known], weights=(student_pred[known] == labels[known]), minlength=c)
    teacher_hits = np.bincount(labels[known], weights=(teacher_pred[known] == labels[known]), minlength=c)
    return Metrics(
        n_images=n,
        n_labelled=n_labelled,
        fidelity=float(agree.mean()) if n else float("nan"),
        kl=kl,
        student_accuracy=float(np.mean(student_pred[known] == labels[known])) if n_labelled else None,
        teacher_accuracy=float(np.mean(teacher_pred[known] == labels[known])) if n_labelled else None,
        class_names=list(class_names),
        precision=precision,
        recall=recall,
        student_class_accuracy=_safe_ratio(student_hits, per_class_count),
        teacher_class_accuracy=_safe_ratio(teacher_hits, per_class_count),
        confusion=confusion,
        disagreement_ids=np.asarray(image_ids)[~agree],
        nec_per_class=np.asarray(nec_per_class),
    )


def evaluate_student(features, student, split: str = "val") -> Metrics:
    """Metrics of a :class:`~infincond.distill.LinearStudent` on a FeatureSet's "val", "train" or "all" rows."""
    rows = {"val": features.is_val, "train": ~features.is_val, "all": np.ones_like(features.is_val)}[split]
    return evaluate(student.logits(features.concept_scores[rows]), features.teacher_logits[rows],
                    features.labels_as_classes[rows], features.image_ids[rows], features.class_names,
                    student.nec_per_class)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def snapshot(metrics: Metrics) -> dict:
    """The metrics a log entry keeps: fidelity, accuracy, KL, NEC, and per class the agreement with the
    teacher (recall of its predictions) and accuracy against labels."""
    agreement, accuracy = _nan_to_none(metrics.recall), _nan_to_none(metrics.student_class_accuracy)
    return {"fidelity": metrics.fidelity, "accuracy": metrics.student_accuracy, "kl": metrics.kl, "nec": metrics.nec,
            "teacher_accuracy": metrics.teacher_accuracy, "n_images": metrics.n_images,
            "per_class": {name: {"fidelity": agreement[c], "accuracy": accuracy[c]}
                          for c, name in enumerate(metrics.class_names)}}
