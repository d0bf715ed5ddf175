"""The student's math, in one place: a linear model over standardised concept presence scores.

    logits = ((scores - score_mean) / score_std) @ weight.T + bias

Everything that standardises scores, computes logits, probabilities or per-concept contributions calls
this module: the distillation, the metrics, the tuning session, the views and the Hub student.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .regions import box_on_image

if TYPE_CHECKING:
    from .distill.config import DistillConfig


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of (N, C) logits at a temperature."""
    z = np.asarray(logits) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (N, C) logits, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def strongest(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest |values| (K,), the non-zero ones only, ties in index order: a class's
    strongest concepts, by weight or by influence."""
    strength = np.abs(np.asarray(values))
    order = np.argsort(-strength, kind="stable")
    return order[strength[order] > 0][:n]


def standardisation(concept_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-concept mean and standard deviation (K,), float32, of scores (N, K); a constant concept gets a
    standard deviation of 1 so that it standardises to 0 rather than dividing by 0."""
    scores = np.asarray(concept_scores, dtype=np.float32)
    std = scores.std(0)
    return scores.mean(0).astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32)


@dataclass
class Contribution:
    """One concept's part in one image's score for one class: ``contribution = weight * standardised
    presence``. ``region`` (x0, y0, x1, y1) is the region where the concept was found, in [0, 1] fractions
    of the encoder's square view of the image; :meth:`box_on` gives it in the image's pixels."""

    concept: str
    weight: float
    presence: float
    contribution: float
    region: tuple[float, float, float, float]

    def box_on(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The region in pixel coordinates of an image of ``image_size`` (width, height)."""
        return box_on_image(np.asarray(self.region), image_size)


@dataclass
class LinearStudent:
    """A fitted linear student: weight (C, K), bias (C,), score_mean / score_std (K,); weight_std (C, K) is
    the bootstrap spread of each weight (None without an ensemble); ``info`` holds how it was fitted."""

    weight: np.ndarray
    bias: np.ndarray
    score_mean: np.ndarray
    score_std: np.ndarray
    config: DistillConfig
    weight_std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def copy(self, **changes) -> LinearStudent:
        """An independent copy (weights and bias as float64, statistics as float32), with ``changes``."""
        copied = {"weight": np.array(self.weight, dtype=np.float64), "bias": np.array(self.bias, dtype=np.float64),
                  "score_mean": np.array(self.score_mean, dtype=np.float32),
                  "score_std": np.array(self.score_std, dtype=np.float32),
                  "weight_std": None if self.weight_std is None else np.array(self.weight_std, dtype=np.float32),
                  "info": dict(self.info)}
        return replace(self, **{**copied, **changes})

    def widened(self, score_mean: np.ndarray, score_std: np.ndarray) -> LinearStudent:
        """This student over k more concepts (appended, with these standardisation statistics (k,)), whose
        weights are 0: it predicts exactly as before."""
        pad = ((0, 0), (0, len(score_mean)))
        return self.copy(weight=np.pad(self.weight, pad), score_mean=np.concatenate([self.score_mean, score_mean]),
                         score_std=np.concatenate([self.score_std, score_std]),
                         weight_std=None if self.weight_std is None else np.pad(self.weight_std, pad))

    def widened_to(self, concept_scores: np.ndarray) -> LinearStudent:
        """This student over every concept of ``concept_scores`` (N, K') (training rows, its own K concepts
        first): the new ones standardised on these rows, with weight 0 (see :meth:`widened`)."""
        return self.widened(*standardisation(np.asarray(concept_scores)[:, self.weight.shape[1]:]))

    def standardise(self, concept_scores: np.ndarray) -> np.ndarray:
        """(scores - score_mean) / score_std, (N, K) float32 (one new array, computed in place)."""
        out = np.subtract(concept_scores, self.score_mean, dtype=np.float32)
        out /= self.score_std
        return out

    def logits(self, concept_scores: np.ndarray) -> np.ndarray:
        """Student logits (N, C) float32 for concept scores (N, K)."""
        return self.logits_of_standardised(self.standardise(concept_scores))

    def logits_of_standardised(self, standardised: np.ndarray, weight: np.ndarray | None = None,
                               bias: np.ndarray | None = None) -> np.ndarray:
        """Logits (N, C) float32 of already standardised scores (N, K), with these weights (default the
        student's own); only the concepts some class uses enter the product."""
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        columns = np.nonzero(np.any(weight != 0, axis=0))[0]
        out = standardised[:, columns] @ np.asarray(weight[:, columns], dtype=np.float32).T
        return out + np.asarray(bias, dtype=np.float32)

    def probabilities(self, concept_scores: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C)."""
        return softmax(self.logits(concept_scores).astype(np.float64))

    def contributions(self, concept_scores: np.ndarray, class_id: int, concepts: Sequence[str],
                      regions: np.ndarray, top_k: int = 6) -> list[Contribution]:
        """The ``top_k`` concepts that contribute most (by |weight x standardised presence|) to ``class_id``
        for one image: ``concept_scores`` (K,), ``regions`` (K, 4) the box of each concept's best region."""
        scores = np.asarray(concept_scores, dtype=np.float32)
        parts = self.weight[class_id] * self.standardise(scores[None])[0]
        active = np.nonzero(self.weight[class_id])[0]
        order = active[np.argsort(-np.abs(parts[active]), kind="stable")][:top_k]
        return [Contribution(concepts[k], float(self.weight[class_id, k]), float(scores[k]), float(parts[k]),
                             tuple(float(v) for v in regions[k])) for k in order]

    @property
    def nec_per_class(self) -> np.ndarray:
        """Effective concepts (non-zero weights) per class, (C,)."""
        return np.count_nonzero(self.weight, axis=1)

    @property
    def nec(self) -> float:
        """Mean effective concepts per class."""
        return float(self.nec_per_class.mean())
