"""The numerical core of distillation: the losses the student fits, the targets they fit, and FISTA with
L1 and box constraints.

Losses work on class-major logits (C, N): a softmax over the short class axis is far faster laid out this
way. The solver only needs gradients: each loss returns its gradient wrt the logits, with sample weights (N,).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..linear import softmax
from .config import DistillConfig

LossGradient = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ConvergenceWarning(UserWarning):
    """A solver stopped at its iteration limit, or the L1 path short of its target (as scikit-learn warns)."""


@dataclass
class Objective:
    """What a fit minimises: the loss gradient wrt logits (C, N), a bound on the loss's curvature, and the
    bias (C,) of the all-zero student (where the path starts)."""

    loss_grad: LossGradient
    curvature: float
    null_bias: torch.Tensor


def soft_targets(teacher_logits: np.ndarray, labels: np.ndarray | None = None, label_weight: float = 0.0,
                 temperature: float = 1.0) -> np.ndarray:
    """What the student fits, (N, C): the teacher's probabilities at ``temperature``, blended with one-hot
    ``labels`` (teacher-class ids, -1 where unknown) by ``label_weight`` where a label is known."""
    target = softmax(np.asarray(teacher_logits, dtype=np.float64), temperature)
    if label_weight > 0:
        known = np.zeros(len(target), dtype=bool) if labels is None else np.asarray(labels) >= 0
        if not known.any():
            raise ConfigError("label_weight > 0 blends in the labels, but no image here has a label among the "
                              "teacher's classes. Use label_weight=0 (pure distillation).")
        target[known] *= 1.0 - label_weight
        target[known, np.asarray(labels)[known]] += label_weight
    return target.astype(np.float32)


def objective(target: np.ndarray, config: DistillConfig) -> Objective:
    """The objective of ``config.method`` for targets (N, C): KL(target || softmax(z / T)) for "kd",
    per-class binary cross-entropy of sigmoid(z) for "bce_ensemble"."""
    t = torch.from_numpy(np.ascontiguousarray(target.T))
    if config.method == "kd":
        temperature = config.temperature

        def kd_grad(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return (torch.softmax(z / temperature, dim=0) - t) * (w / temperature)

        return Objective(kd_grad, 0.5 / temperature**2, temperature * torch.log(t.mean(1).clamp_min(1e-12)))

    def bce_grad(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(z) - t) * w

    mean_target = t.mean(1).clamp(1e-6, 1 - 1e-6)
    return Objective(bce_grad, 0.25, torch.log(mean_target / (1 - mean_target)))


def largest_sq_singular(x: torch.Tensor, iters: int = 30) -> float:
    """sigma_max(x)^2 by power iteration on x^T x (0 for a matrix without columns)."""
    if x.shape[1] == 0:
        return 0.0
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape[1], generator=gen, dtype=x.dtype)
    v /= v.norm()
    for _ in range(iters):
        u = x.T @ (x @ v)
        v = u / u.norm().clamp_min(1e-12)
    return float((x @ v).square().sum())


def prox(v: torch.Tensor, threshold: float, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Prox of threshold*|w| plus the box [lower, upper]: soft-threshold then clip (exact, separable 1-D)."""
    if threshold > 0:
        v = torch.sign(v) * (v.abs() - threshold).clamp_min(0.0)
    return torch.maximum(torch.minimum(v, upper), lower)


@dataclass
class FistaResult:
    """Weights (C, K'), bias (C,), the iterations run and whether the relative change fell below ``tol``."""

    weight: torch.Tensor
    bias: torch.Tensor
    iterations: int
    converged: bool


class Problem:
    """One smooth loss over standardised scores x (N, K') with sample weights (N,); FISTA solves it with L1
    and box constraints. ``sq_singular`` is sigma_max(x)^2 (passed when already known)."""

    def __init__(self, x: torch.Tensor, objective: Objective, l2: float, sample_weight: torch.Tensor,
                 sq_singular: float | None = None) -> None:
        self.x, self.objective, self.l2, self.w = x, objective, l2, sample_weight
        self.sq_singular = largest_sq_singular(x) if sq_singular is None else sq_singular
        n = x.shape[0]
        # Lipschitz constant of the gradient wrt (W, b): curvature * sigma_max([X 1] diag(w))^2 + l2.
        scale = float(sample_weight.max()) * n
        self.lipschitz = 1.05 * objective.curvature * max(self.sq_singular, n) * scale / n + l2

    def gradients(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the smooth loss wrt weight (C, K') and bias (C,)."""
        z = weight @ self.x.T + bias[:, None]  # (C, N)
        gz = self.objective.loss_grad(z, self.w)
        return gz @ self.x + self.l2 * weight, gz.sum(1)

    def fista(self, weight: torch.Tensor, bias: torch.Tensor, l1: float, lower: torch.Tensor, upper: torch.Tensor,
              max_iter: int, tol: float) -> FistaResult:
        """Accelerated proximal gradient with adaptive restart, from (weight, bias)."""
        step = 1.0 / self.lipschitz
        weight = prox(weight, 0.0, lower, upper)
        y_w, y_b, t = weight.clone(), bias.clone(), 1.0
        for it in range(1, max_iter + 1):
            g_w, g_b = self.gradients(y_w, y_b)
            new_w = prox(y_w - step * g_w, step * l1, lower, upper)
            new_b = y_b - step * g_b
            # Adaptive restart (O'Donoghue & Candes): drop momentum when it points uphill.
            if float(((y_w - new_w) * (new_w - weight)).sum() + ((y_b - new_b) * (new_b - bias)).sum()) > 0:
                t = 1.0
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            momentum = (t - 1.0) / t_next
            change = float((new_w - weight).norm()) / max(float(new_w.norm()), 1.0)
            y_w = new_w + momentum * (new_w - weight)
            y_b = new_b + momentum * (new_b - bias)
            weight, bias, t = new_w, new_b, t_next
            if change < tol:
                return FistaResult(weight, bias, it, True)
        return FistaResult(weight, bias, max_iter, False)
