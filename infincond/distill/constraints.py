"""Box constraints on the student's weights: what tuning edits become, and what every fit obeys exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConstraintError


@dataclass
class Constraints:
    """Bounds on each student weight (C, K), in the standardised-score space; -inf / inf where free."""

    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def free(cls, num_classes: int, num_concepts: int) -> Constraints:
        return cls(np.full((num_classes, num_concepts), -np.inf), np.full((num_classes, num_concepts), np.inf))

    def copy(self) -> Constraints:
        return Constraints(self.lower.copy(), self.upper.copy())

    @property
    def fixed(self) -> np.ndarray:
        """(C, K) bool: weights whose bounds are equal."""
        return self.lower == self.upper

    @property
    def bounded(self) -> np.ndarray:
        """(C, K) bool: weights with a finite bound; a refit always keeps them in play."""
        return np.isfinite(self.lower) | np.isfinite(self.upper)

    @property
    def forced_nonzero(self) -> np.ndarray:
        """(C, K) bool: weights whose bounds exclude zero; they always belong to the support."""
        return (self.lower > 0) | (self.upper < 0)

    def validate(self, num_classes: int, num_concepts: int) -> None:
        """Raise a :class:`ConstraintError` for a wrong shape, NaN bounds or a lower bound above its upper."""
        if self.lower.shape != (num_classes, num_concepts) or self.upper.shape != (num_classes, num_concepts):
            raise ConstraintError(f"Constraints have shape {self.lower.shape}/{self.upper.shape}, the student "
                                  f"({num_classes}, {num_concepts}).")
        if np.isnan(self.lower).any() or np.isnan(self.upper).any():
            raise ConstraintError("Constraint bounds must not be NaN.")
        bad = np.argwhere(self.lower > self.upper)
        if len(bad):
            c, k = bad[0]
            raise ConstraintError(
                f"Contradictory constraints on weight (class {c}, concept {k}): lower bound "
                f"{self.lower[c, k]:.4g} > upper bound {self.upper[c, k]:.4g}. Restore one of them first.")

    def clip(self, weight: np.ndarray) -> np.ndarray:
        """``weight`` as float64, clipped to the float64 bounds, so that they hold exactly."""
        return np.clip(np.asarray(weight, dtype=np.float64), self.lower, self.upper)

    def holds(self, weight: np.ndarray, atol: float = 0.0) -> bool:
        """Whether ``weight`` (C, K) lies inside every bound."""
        return bool(np.all(weight >= self.lower - atol) and np.all(weight <= self.upper + atol))
