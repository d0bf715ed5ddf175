"""Distillation: fit a sparse linear student over standardised concept scores that mimics a teacher.

Two recipes:

* ``"kd"`` (default): softmax knowledge distillation (KL to the teacher at temperature T) with L1,
  solved full-batch by FISTA with adaptive restart. A target number of effective concepts per class
  (``nec``) is met exactly: an L1 path picks each class's support, then the student is refitted on it
  (no shrinkage bias). An optional bootstrap ensemble gives the mean student and per-weight spread.
* ``"bce_ensemble"``: the seed paper's recipe, k=20 linear models, per-class binary cross-entropy against
  the teacher's probabilities, L1 with lambda=1e-4, averaged.

Box constraints (lower/upper bound per weight, equal bounds = fixed) hold exactly in both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_choice, check_integer, check_number
from .errors import ConfigError, ConstraintError

METHODS = ("kd", "bce_ensemble")


@dataclass
class DistillConfig:
    """Settings of a distillation; every default lives here.

    ``nec``: effective (non-zero) concepts per class for "kd"; None fits with the fixed ``l1`` instead.
    ``l1``: L1 strength (mean loss units); default 1e-4 for "bce_ensemble", 1e-3 for "kd" without nec.
    ``ensemble``: bootstrap members (None: 1 for "kd", 20 for "bce_ensemble").
    ``label_weight`` (alpha): how much the labels count in the target, where they exist: the student fits
    (1 - alpha) * teacher probabilities + alpha * one-hot label. 0 = pure distillation.
    """

    method: str = "kd"
    nec: int | None = 5
    temperature: float = 1.0
    l1: float | None = None
    l2: float = 1e-4
    ensemble: int | None = None
    path_steps: int = 24
    path_min_ratio: float = 1e-3
    path_iter: int = 60
    max_iter: int = 400
    tol: float = 1e-5
    seed: int = 0
    label_weight: float = 0.0

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        if self.nec is not None:
            self.nec = check_integer("nec (effective concepts per class)", self.nec, 1)
        self.temperature = check_number("temperature", self.temperature, 0.0, low_open=True)
        if self.l1 is not None:
            self.l1 = check_number("l1", self.l1, 0.0)
        self.l2 = check_number("l2", self.l2, 0.0)
        if self.ensemble is not None:
            self.ensemble = check_integer("ensemble", self.ensemble, 1)
        self.path_steps = check_integer("path_steps", self.path_steps, 2)
        self.path_min_ratio = check_number("path_min_ratio", self.path_min_ratio, 0.0, 1.0, low_open=True,
                                           high_open=True)
        self.path_iter = check_integer("path_iter", self.path_iter, 1)
        self.max_iter = check_integer("max_iter", self.max_iter, 1)
        self.tol = check_number("tol", self.tol, 0.0, low_open=True)
        self.seed = check_integer("seed", self.seed, 0)
        self.label_weight = check_number("label_weight (alpha)", self.label_weight, 0.0, 1.0)

    @property
    def members(self) -> int:
        return self.ensemble or (20 if self.method == "bce_ensemble" else 1)

    @property
    def l1_strength(self) -> float:
        return self.l1 if self.l1 is not None else (1e-4 if self.method == "bce_ensemble" else 1e-3)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Constraints:
    """Bounds on each student weight (C, K), in the standardised-score space; -inf/inf where free."""

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
    def forced_nonzero(self) -> np.ndarray:
        """(C, K) bool: weights whose bounds exclude zero; they always belong to the support."""
        return (self.lower > 0) | (self.upper < 0)

    def validate(self, num_classes: int, num_concepts: int) -> None:
        if self.lower.shape != (num_classes, num_concepts) or self.upper.shape != (num_classes, num_concepts):
            raise ConstraintError(
                f"Constraints have shape {self.lower.shape}/{self.upper.shape}, the student ({num_classes}, {num_concepts})."
            )
        if np.isnan(self.lower).any() or np.isnan(self.upper).any():
            raise ConstraintError("Constraint bounds must not be NaN.")
        bad = np.argwhere(self.lower > self.upper)
        if len(bad):
            c, k = bad[0]
            raise ConstraintError(
                f"Contradictory constraints on weight (class {c}, concept {k}): lower bound "
                f"{self.lower[c, k]:.4g} > upper bound {self.upper[c, k]:.4g}. Restore one of them first."
            )

    def holds(self, weight: np.ndarray, atol: float = 0.0) -> bool:
        """Whether ``weight`` (C, K) lies inside every bound."""
        return bool(np.all(weight >= self.lower - atol) and np.all(weight <= self.upper + atol))


@dataclass
class LinearStudent:
    """A fitted linear student: logits = ((scores - score_mean) / score_std) @ weight.T + bias.

    weight (C, K), bias (C,), score_mean / score_std (K,); weight_std (C, K) is the bootstrap spread
    (None without an ensemble).
    """

    weight: np.ndarray
    bias: np.ndarray
    score_mean: np.ndarray
    score_std: np.ndarray
    config: DistillConfig
    weight_std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def standardise(self, concept_scores: np.ndarray) -> np.ndarray:
        return (concept_scores - self.score_mean) / self.score_std

    def logits(self, concept_scores: np.ndarray) -> np.ndarray:
        """Student logits (N, C) for concept scores (N, K)."""
        return (self.standardise(concept_scores) @ self.weight.T + self.bias).astype(np.float32)

    @property
    def nec_per_class(self) -> np.ndarray:
        """Effective concepts (non-zero weights) per class, (C,)."""
        return np.count_nonzero(self.weight, axis=1)

    @property
    def nec(self) -> float:
        """Mean effective concepts per class."""
        return float(self.nec_per_class.mean())


# ---------------------------------------------------------------------------------------------------
# Losses work on class-major logits (C, N): a softmax over the short class axis is far faster laid out
# this way. The solver only needs gradients: each loss returns its gradient wrt the logits, with sample
# weights (N,).

def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of (N, C) logits at a temperature."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _kd_loss(target: torch.Tensor, temperature: float) -> tuple[Callable, float]:
    """KL(target || softmax(z / T)); ``target`` (C, N)."""
    def loss_grad(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(z / temperature, dim=0) - target) * (w / temperature)

    return loss_grad, 0.5 / temperature**2


def _bce_loss(target: torch.Tensor) -> tuple[Callable, float]:
    """Per-class binary cross-entropy of sigmoid(z) against ``target`` (C, N)."""
    def loss_grad(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(z) - target) * w

    return loss_grad, 0.25


def _largest_sq_singular(x: torch.Tensor, iters: int = 30) -> float:
    """sigma_max(x)^2 by power iteration on x^T x."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape[1], generator=gen, dtype=x.dtype)
    v /= v.norm()
    for _ in range(iters):
        u = x.T @ (x @ v)
        v = u / u.norm().clamp_min(1e-12)
    return float((x @ v).square().sum())


def _prox(v: torch.Tensor, threshold: float, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Prox of threshold*|w| plus the box [lower, upper]: soft-threshold then clip (exact, separable 1-D)."""
    if threshold > 0:
        v = torch.sign(v) * (v.abs() - threshold).clamp_min(0.0)
    return torch.maximum(torch.minimum(v, upper), lower)


class _Problem:
    """One smooth loss over standardised scores with sample weights; FISTA solves it with L1 + box."""

    def __init__(self, x: torch.Tensor, loss_grad: Callable, curvature: float, l2: float, sample_weight: torch.Tensor,
                 sq_singular: float) -> None:
        self.x, self.loss_grad, self.l2, self.w = x, loss_grad, l2, sample_weight
        self.curvature, self.sq_singular = curvature, sq_singular
        n = x.shape[0]
        # Lipschitz constant of the gradient wrt (W, b): curvature * sigma_max([X 1] diag(w))^2 + l2.
        scale = float(sample_weight.max()) * n
        self.lipschitz = 1.05 * curvature * max(sq_singular, n) * scale / n + l2

    def reweighted(self, sample_weight: torch.Tensor) -> _Problem:
        """The same problem with other sample weights (a bootstrap member), sharing x and its norm."""
        return _Problem(self.x, self.loss_grad, self.curvature, self.l2, sample_weight, self.sq_singular)

    def gradients(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the smooth loss wrt weight (C, K) and bias (C,)."""
        z = weight @ self.x.T + bias[:, None]  # (C, N)
        gz = self.loss_grad(z, self.w)
        return gz @ self.x + self.l2 * weight, gz.sum(1)

    def fista(self, weight: torch.Tensor, bias: torch.Tensor, l1: float, lower: torch.Tensor, upper: torch.Tensor,
              max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        step = 1.0 / self.lipschitz
        weight = _prox(weight, 0.0, lower, upper)
        y_w, y_b, t = weight.clone(), bias.clone(), 1.0
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
            g_w, g_b = self.gradients(y_w, y_b)
            new_w = _prox(y_w - step * g_w, step * l1, lower, upper)
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
                break
        return weight, bias, it


def _exact(weight: torch.Tensor, constraints: Constraints) -> np.ndarray:
    """Weights as float64, clipped to the float64 bounds so that they hold exactly (no float32 round-off)."""
    return np.clip(weight.numpy().astype(np.float64), constraints.lower, constraints.upper)


def _select_support(weight: torch.Tensor, nec: int, forced: torch.Tensor) -> torch.Tensor:
    """(C, K) bool: each class's ``nec`` largest |weights| (non-zero only), plus the forced ones."""
    k = min(nec, weight.shape[1])
    top = torch.topk(weight.abs(), k, dim=1).indices
    mask = torch.zeros_like(weight, dtype=torch.bool).scatter_(1, top, True) & (weight != 0)
    return mask | forced


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


def _objective(target: np.ndarray, config: DistillConfig) -> tuple[Callable, float, torch.Tensor]:
    """Loss gradient, curvature bound and the bias of the all-zero student, for targets (N, C)."""
    t = torch.from_numpy(np.ascontiguousarray(target.T))
    if config.method == "kd":
        loss, curvature = _kd_loss(t, config.temperature)
        return loss, curvature, config.temperature * torch.log(t.mean(1).clamp_min(1e-12))
    loss, curvature = _bce_loss(t)
    mean_target = t.mean(1).clamp(1e-6, 1 - 1e-6)
    return loss, curvature, torch.log(mean_target / (1 - mean_target))


def fit(concept_scores: np.ndarray, teacher_logits: np.ndarray, config: DistillConfig | None = None,
        constraints: Constraints | None = None, init: LinearStudent | None = None,
        progress: bool = False, labels: np.ndarray | None = None) -> LinearStudent:
    """Fit a linear student to the teacher on these rows.

    concept_scores (N, K) float, teacher_logits (N, C) float, labels (N,) teacher-class ids or -1 (used when
    ``config.label_weight`` > 0). ``init``: a previous student to warm-start from; its standardisation and
    support are kept and no L1 path is run. Returns a :class:`LinearStudent` whose weights satisfy
    ``constraints`` exactly.
    """
    config = config or DistillConfig()
    start = time.perf_counter()
    scores = np.asarray(concept_scores, dtype=np.float32)
    logits = np.asarray(teacher_logits, dtype=np.float32)
    if scores.ndim != 2 or logits.ndim != 2 or len(scores) != len(logits):
        raise ConfigError(f"concept_scores {scores.shape} and teacher_logits {logits.shape} must be (N, K) and (N, C).")
    n, k = scores.shape
    c = logits.shape[1]
    constraints = constraints or Constraints.free(c, k)
    constraints.validate(c, k)

    if init is not None:
        mean, std = init.score_mean, init.score_std
    else:
        mean = scores.mean(0)
        std = scores.std(0)
        std = np.where(std < 1e-6, 1.0, std).astype(np.float32)
    x = torch.from_numpy(((scores - mean) / std).astype(np.float32))
    lower = torch.from_numpy(constraints.lower.astype(np.float32))
    upper = torch.from_numpy(constraints.upper.astype(np.float32))
    forced = torch.from_numpy(constraints.forced_nonzero)

    temperature = config.temperature if config.method == "kd" else 1.0
    loss, curvature, null_bias = _objective(soft_targets(logits, labels, config.label_weight, temperature), config)
    sq_singular = _largest_sq_singular(x)
    uniform = torch.full((n,), 1.0 / n)
    problem = _Problem(x, loss, curvature, config.l2, uniform, sq_singular)
    info: dict = {"n_train": n, "lipschitz": problem.lipschitz}
    rng = np.random.default_rng(config.seed)

    def bootstrap_weights() -> torch.Tensor:
        """Sample weights (N,) of one bootstrap resample: draw counts / N."""
        return torch.from_numpy(rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float32) / n)

    if config.method == "bce_ensemble":
        members = []
        bar = tqdm(range(config.members), desc="Fitting ensemble", disable=not progress)
        for _ in bar:
            w0 = torch.zeros(c, k)
            w, b, _ = problem.reweighted(bootstrap_weights()).fista(w0, null_bias.clone(), config.l1_strength, lower, upper,
                                                config.max_iter, config.tol)
            members.append((w, b))
        weights = torch.stack([m[0] for m in members])
        biases = torch.stack([m[1] for m in members])
        info["seconds"] = time.perf_counter() - start
        return LinearStudent(_exact(weights.mean(0), constraints), biases.mean(0).numpy().astype(np.float64),
                             mean.astype(np.float32), std.astype(np.float32), config, weights.std(0).numpy(), info)

    # --- "kd": choose the support, then refit on it ---------------------------------------------
    def restricted(columns: torch.Tensor) -> _Problem:
        """The problem over a subset of concepts (the others held at 0): far cheaper per iteration."""
        sub = x[:, columns].contiguous()
        return _Problem(sub, loss, curvature, config.l2, uniform, _largest_sq_singular(sub))

    free = torch.from_numpy(~constraints.fixed)
    if init is not None:
        weight = torch.from_numpy(init.weight.astype(np.float32))
        bias = torch.from_numpy(init.bias.astype(np.float32))
        support = (weight != 0) | forced if config.nec is not None else None
        l1 = 0.0 if config.nec is not None else config.l1_strength
    elif config.nec is not None:
        weight = _prox(torch.zeros(c, k), 0.0, lower, upper)
        bias = null_bias.clone()
        grad_w, _ = problem.gradients(weight, bias)
        lam_max = float(grad_w.abs()[free].max()) if bool(free.any()) else 0.0
        lambdas = lam_max * np.geomspace(1.0, config.path_min_ratio, config.path_steps)[1:]
        target_nec = min(config.nec, k)
        path = []
        previous = lam_max
        bar = tqdm(lambdas, desc=f"L1 path to NEC={target_nec}", disable=not progress)
        for lam in bar:  # the path stops early: the bar is closed below, or Gradio keeps showing it
            lam = float(lam)
            # Strong rules (Tibshirani et al. 2012) guess the working set; KKT checks on all concepts
            # add any concept they missed, so the path is exact while iterating on few columns.
            working = (weight != 0).any(0) | forced.any(0) | ((grad_w.abs() * free).amax(0) >= 2 * lam - previous)
            iters = 0
            for _ in range(10):
                columns = torch.nonzero(working).flatten()
                sub_weight, bias, used = restricted(columns).fista(
                    weight[:, columns], bias, lam, lower[:, columns], upper[:, columns], config.path_iter, config.tol)
                iters += used
                weight = torch.zeros(c, k)
                weight[:, columns] = sub_weight
                grad_w, _ = problem.gradients(weight, bias)
                missed = ((grad_w.abs() > lam * (1 + 1e-3)) & free & (weight == 0)).any(0) & ~working
                if not bool(missed.any()):
                    break
                working |= missed
            previous = lam
            nnz = (weight != 0).sum(1)
            path.append({"l1": lam, "nec_min": int(nnz.min()), "nec_mean": float(nnz.float().mean()),
                         "iters": iters, "working_set": int(working.sum())})
            if int(nnz.min()) >= target_nec:
                break
        bar.close()
        info["path"] = path
        support = _select_support(weight, target_nec, forced)
        l1 = 0.0
    else:
        weight, bias, support, l1 = _prox(torch.zeros(c, k), 0.0, lower, upper), null_bias.clone(), None, config.l1_strength

    if support is not None:
        # Outside the support a weight is held at 0 (forced weights are always inside it), so the refit
        # only needs the concepts some class uses.
        lower = torch.where(support, lower, torch.zeros_like(lower))
        upper = torch.where(support, upper, torch.zeros_like(upper))
        columns = torch.nonzero(support.any(0)).flatten()
    else:
        columns = torch.arange(k)
    refit = restricted(columns) if len(columns) < k else problem
    sub_weight, bias, iters = refit.fista(weight[:, columns], bias, l1, lower[:, columns], upper[:, columns],
                                          config.max_iter, config.tol)
    info["refit_iters"] = iters
    weight_std = None
    if config.members > 1:
        members = []
        for _ in tqdm(range(config.members), desc="Bootstrap ensemble", disable=not progress):
            member = refit.reweighted(bootstrap_weights())
            members.append(member.fista(sub_weight, bias, l1, lower[:, columns], upper[:, columns],
                                        config.max_iter, config.tol)[:2])
        stacked = torch.stack([m[0] for m in members])
        sub_weight = stacked.mean(0)
        weight_std = np.zeros((c, k), dtype=np.float32)
        weight_std[:, columns.numpy()] = stacked.std(0).numpy()
        bias = torch.stack([m[1] for m in members]).mean(0)
    weight = torch.zeros(c, k)
    weight[:, columns] = sub_weight
    info["seconds"] = time.perf_counter() - start
    return LinearStudent(_exact(weight, constraints), bias.numpy().astype(np.float64), mean.astype(np.float32),
                         std.astype(np.float32), config, weight_std, info)


class Refitter:
    """Warm-started constrained refits of one student on fixed rows: what interactive tuning calls.

    The rows are standardised once, with the student's own statistics, and the targets are cached per
    label weight. Each :meth:`refit` solves the student's objective (its :class:`DistillConfig`) without L1:
    the sparsity is the ``support`` mask, and every weight with a finite bound is in play as well.
    """

    def __init__(self, concept_scores: np.ndarray, teacher_logits: np.ndarray, student: LinearStudent,
                 labels: np.ndarray | None = None) -> None:
        scores = np.asarray(concept_scores, dtype=np.float32)
        self.config = student.config
        self.x = torch.from_numpy(((scores - student.score_mean) / student.score_std).astype(np.float32))
        self.teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
        self.labels = None if labels is None else np.asarray(labels)
        self._objectives: dict[float, tuple[Callable, float, torch.Tensor]] = {}

    def objective(self, label_weight: float) -> tuple[Callable, float, torch.Tensor]:
        """The cached (loss gradient, curvature, null bias) for this label weight."""
        if label_weight not in self._objectives:
            temperature = self.config.temperature if self.config.method == "kd" else 1.0
            target = soft_targets(self.teacher_logits, self.labels, label_weight, temperature)
            self._objectives[label_weight] = _objective(target, self.config)
        return self._objectives[label_weight]

    def refit(self, weight: np.ndarray, bias: np.ndarray, constraints: Constraints, support: np.ndarray,
              label_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict]:
        """Refit from (weight (C, K), bias (C,)): returns the new float64 weight and bias, which satisfy
        ``constraints`` exactly, and an info dict (iterations, columns, seconds)."""
        start = time.perf_counter()
        c, k = weight.shape
        constraints.validate(c, k)
        bounded = np.isfinite(constraints.lower) | np.isfinite(constraints.upper)
        active = np.asarray(support, dtype=bool) | bounded
        low = np.where(active, constraints.lower, 0.0)
        high = np.where(active, constraints.upper, 0.0)
        columns = np.nonzero(active.any(0))[0]
        loss, curvature, _ = self.objective(label_weight)
        sub = self.x[:, torch.from_numpy(columns)].contiguous()
        sq_singular = _largest_sq_singular(sub) if len(columns) else 0.0
        problem = _Problem(sub, loss, curvature, self.config.l2, torch.full((len(self.x),), 1.0 / len(self.x)),
                           sq_singular)
        sub_weight, new_bias, iters = problem.fista(
            torch.from_numpy(weight[:, columns].astype(np.float32)), torch.from_numpy(bias.astype(np.float32)), 0.0,
            torch.from_numpy(low[:, columns].astype(np.float32)), torch.from_numpy(high[:, columns].astype(np.float32)),
            self.config.max_iter, self.config.tol)
        full = np.zeros((c, k))
        full[:, columns] = sub_weight.numpy()
        info = {"iterations": iters, "columns": len(columns), "seconds": time.perf_counter() - start}
        return np.clip(full, low, high), new_bias.numpy().astype(np.float64), info


def distill(features, config: DistillConfig | None = None, constraints: Constraints | None = None,
            init: LinearStudent | None = None, progress: bool = False) -> LinearStudent:
    """Fit on the training part of a :class:`~infincond.features.FeatureSet`."""
    train = ~features.is_val
    return fit(features.concept_scores[train], features.teacher_logits[train], config, constraints, init, progress,
               labels=features.labels_as_classes[train])
