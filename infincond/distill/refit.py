"""THE constrained refit: every fit of a student on a given support goes through :class:`Refitter`, the
distillation's final refit, its bootstrap members, the BCE ensemble, and every tuning edit."""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..linear import LinearStudent
from .config import DistillConfig
from .constraints import Constraints
from .solvers import ConvergenceWarning, Objective, Problem, largest_sq_singular, objective, soft_targets


class Refitter:
    """Constrained refits of a student on fixed rows.

    The rows are standardised once (``standardised`` (N, K) float32, see :meth:`LinearStudent.standardise`),
    the objective is cached per label weight, and sigma_max of each column subset per subset. Each
    :meth:`refit` solves ``config``'s objective over an explicit support, warm-started; weights outside
    it are held at 0.
    """

    def __init__(self, standardised: np.ndarray, teacher_logits: np.ndarray, config: DistillConfig,
                 labels: np.ndarray | None = None) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(standardised, dtype=np.float32))
        self.teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
        self.labels = None if labels is None else np.asarray(labels)
        self.config = config
        self.uniform = torch.full((len(self.x),), 1.0 / max(len(self.x), 1))
        self._objectives: dict[float, Objective] = {}
        self._sq_singular: dict[bytes, float] = {}

    @classmethod
    def for_student(cls, concept_scores: np.ndarray, teacher_logits: np.ndarray, student: LinearStudent,
                    labels: np.ndarray | None = None) -> Refitter:
        """Refits of ``student`` on these rows (standardised with its own statistics)."""
        return cls(student.standardise(concept_scores), teacher_logits, student.config, labels)

    def objective(self, label_weight: float) -> Objective:
        """The cached objective for this label weight (alpha)."""
        if label_weight not in self._objectives:
            target = soft_targets(self.teacher_logits, self.labels, label_weight, self.config.fit_temperature)
            self._objectives[label_weight] = objective(target, self.config)
        return self._objectives[label_weight]

    def problem(self, columns: np.ndarray, label_weight: float = 0.0,
                sample_weight: torch.Tensor | None = None) -> Problem:
        """The problem restricted to ``columns`` (the other concepts held at 0): far cheaper per iteration."""
        full = len(columns) == self.x.shape[1]
        x = self.x if full else self.x[:, torch.from_numpy(columns)].contiguous()
        key = columns.tobytes()
        if key not in self._sq_singular:
            self._sq_singular[key] = largest_sq_singular(x)
        weights = self.uniform if sample_weight is None else sample_weight
        return Problem(x, self.objective(label_weight), self.config.l2, weights, self._sq_singular[key])

    def refit(self, weight: np.ndarray, bias: np.ndarray, constraints: Constraints, support: np.ndarray,
              label_weight: float = 0.0, *, l1: float = 0.0, sample_weight: torch.Tensor | None = None,
              warn: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
        """Refit from (weight (C, K), bias (C,)) over ``support`` (C, K) bool. Returns the new float64
        weight, which satisfies ``constraints`` exactly, the bias, and an info dict (iterations, converged,
        columns, seconds). A solver that stops at ``config.max_iter`` warns with a ConvergenceWarning."""
        start = time.perf_counter()
        c, k = weight.shape
        constraints.validate(c, k)
        active = np.asarray(support, dtype=bool)
        low = np.where(active, constraints.lower, 0.0)
        high = np.where(active, constraints.upper, 0.0)
        columns = np.nonzero(active.any(0))[0]
        problem = self.problem(columns, label_weight, sample_weight)
        result = problem.fista(
            torch.from_numpy(np.asarray(weight[:, columns], dtype=np.float32)),
            torch.from_numpy(np.asarray(bias, dtype=np.float32)), l1,
            torch.from_numpy(low[:, columns].astype(np.float32)), torch.from_numpy(high[:, columns].astype(np.float32)),
            self.config.max_iter, self.config.tol)
        if warn and not result.converged:
            warnings.warn(f"The refit did not converge in {self.config.max_iter} iterations (relative change still "
                          f"above tol={self.config.tol:g}). Increase DistillConfig.max_iter for a closer fit.",
                          ConvergenceWarning, stacklevel=2)
        full = np.zeros((c, k))
        full[:, columns] = result.weight.numpy()
        info = {"iterations": result.iterations, "converged": result.converged, "columns": len(columns),
                "seconds": time.perf_counter() - start}
        return Constraints(low, high).clip(full), result.bias.numpy().astype(np.float64), info
