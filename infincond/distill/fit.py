"""Fitting a linear student to a teacher: the two recipes, on top of the L1 path and the one refit.

* ``"kd"`` (default): softmax knowledge distillation (KL to the teacher at temperature T) with L1, solved
  full-batch by FISTA with adaptive restart. A target number of effective concepts per class (``nec``) is
  met exactly: an L1 path picks each class's support, then the student is refitted on it (no shrinkage
  bias). An optional bootstrap ensemble gives the mean student and the spread of each weight.
* ``"bce_ensemble"``: the seed paper's recipe, k=20 linear models, per-class binary cross-entropy against
  the teacher's probabilities, L1 with lambda=1e-4, averaged.

Box constraints (lower/upper bound per weight, equal bounds = fixed) hold exactly in both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import check_integer
from ..errors import ConfigError
from ..linear import LinearStudent, standardisation
from .config import DistillConfig
from .constraints import Constraints
from .path import l1_path
from .refit import Refitter


def _select_support(weight: torch.Tensor, nec: int, forced: np.ndarray) -> np.ndarray:
    """(C, K) bool: each class's ``nec`` largest |weights| (non-zero only), plus the forced ones."""
    top = torch.topk(weight.abs(), min(nec, weight.shape[1]), dim=1).indices
    mask = torch.zeros_like(weight, dtype=torch.bool).scatter_(1, top, True) & (weight != 0)
    return mask.numpy() | forced


def _bootstrap(refitter: Refitter, members: int, seed: int, fit_member, progress: bool, desc: str):
    """Fit ``members`` bootstrap resamples (``fit_member(sample_weight)`` -> (weight, bias)); returns the mean
    weight (C, K), its spread (C, K) and the mean bias (C,)."""
    n = len(refitter.x)
    rng = np.random.default_rng(seed)
    fitted = []
    for _ in tqdm(range(members), desc=desc, disable=not progress):
        counts = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float32) / n
        fitted.append(fit_member(torch.from_numpy(counts)))
    weights = np.stack([w for w, _ in fitted])
    return weights.mean(0), weights.std(0).astype(np.float32), np.stack([b for _, b in fitted]).mean(0)


def _fit_ensemble(student: LinearStudent, refitter: Refitter, constraints: Constraints, progress: bool) -> None:
    """The seed paper's recipe: bootstrap members fitted with BCE + L1 from zero, averaged."""
    config, (c, k) = student.config, student.weight.shape
    null_bias = refitter.objective(config.label_weight).null_bias.numpy()

    def member(sample_weight):
        weight, bias, _ = refitter.refit(np.zeros((c, k)), null_bias, constraints, np.ones((c, k), dtype=bool),
                                         config.label_weight, l1=config.l1_strength, sample_weight=sample_weight)
        return weight, bias

    weight, weight_std, bias = _bootstrap(refitter, config.members, config.seed, member, progress, "Fitting ensemble")
    student.weight, student.bias, student.weight_std = constraints.clip(weight), bias, weight_std


def _finish_kd(student: LinearStudent, refitter: Refitter, constraints: Constraints, weight: np.ndarray,
               bias: np.ndarray, support: np.ndarray, l1: float, progress: bool) -> LinearStudent:
    """The refit on ``support`` from (weight, bias), then, when asked, a bootstrap ensemble around it."""
    config = student.config
    weight, bias, refit_info = refitter.refit(weight, bias, constraints, support, config.label_weight, l1=l1)
    student.info["refit_iters"] = refit_info["iterations"]
    student.weight, student.bias = weight, bias
    if config.members > 1:
        def member(sample_weight):
            return refitter.refit(weight, bias, constraints, support, config.label_weight, l1=l1,
                                  sample_weight=sample_weight, warn=False)[:2]
        mean_weight, weight_std, mean_bias = _bootstrap(refitter, config.members, config.seed, member, progress,
                                                        "Bootstrap ensemble")
        student.weight, student.weight_std, student.bias = constraints.clip(mean_weight), weight_std, mean_bias
    return student


def _prepare(concept_scores: np.ndarray, teacher_logits: np.ndarray, config: DistillConfig,
             constraints: Constraints | None, init: LinearStudent | None,
             labels: np.ndarray | None) -> tuple[LinearStudent, Refitter, Constraints]:
    """An empty student with its standardisation, the Refitter on its rows, and checked constraints."""
    scores = np.asarray(concept_scores, dtype=np.float32)
    logits = np.asarray(teacher_logits, dtype=np.float32)
    if scores.ndim != 2 or logits.ndim != 2 or len(scores) != len(logits) or not len(scores):
        raise ConfigError(f"concept_scores {scores.shape} and teacher_logits {logits.shape} must be (N, K) and (N, C) "
                          "with N > 0.")
    (n, k), c = scores.shape, logits.shape[1]
    constraints = constraints or Constraints.free(c, k)
    constraints.validate(c, k)
    mean, std = (init.score_mean, init.score_std) if init is not None else standardisation(scores)
    student = LinearStudent(np.zeros((c, k)), np.zeros(c), mean, std, config, info={"n_train": n})
    return student, Refitter(student.standardise(scores), logits, config, labels), constraints


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
    if config.method == "kd" and config.nec is not None and init is None:
        return fit_sweep(concept_scores, teacher_logits, [config.nec], config, constraints, progress, labels)[0]
    start = time.perf_counter()
    student, refitter, constraints = _prepare(concept_scores, teacher_logits, config, constraints, init, labels)
    c, k = student.weight.shape
    if config.method == "bce_ensemble":
        _fit_ensemble(student, refitter, constraints, progress)
    elif init is not None:
        support = (init.weight != 0) | constraints.forced_nonzero if config.nec is not None else np.ones((c, k), bool)
        _finish_kd(student, refitter, constraints, init.weight, init.bias, support,
                   0.0 if config.nec is not None else config.l1_strength, progress)
    else:  # a fixed L1 strength over every concept
        bias = refitter.objective(config.label_weight).null_bias.numpy()
        _finish_kd(student, refitter, constraints, np.zeros((c, k)), bias, np.ones((c, k), bool),
                   config.l1_strength, progress)
    student.info["seconds"] = time.perf_counter() - start
    return student


def fit_sweep(concept_scores: np.ndarray, teacher_logits: np.ndarray, necs: Sequence[int],
              config: DistillConfig | None = None, constraints: Constraints | None = None, progress: bool = False,
              labels: np.ndarray | None = None) -> list[LinearStudent]:
    """ "kd" students at several NEC targets (sorted, one per distinct target) from ONE L1 path: each is the
    refit on its target's support, exactly what :func:`fit` gives for that target alone, for about the
    cost of the largest target's fit."""
    config = config or DistillConfig()
    if config.method != "kd":
        raise ConfigError("A sparsity sweep is for the 'kd' method (the L1 path picks each target's support).")
    start = time.perf_counter()
    template, refitter, constraints = _prepare(concept_scores, teacher_logits, config, constraints, None, labels)
    k = template.weight.shape[1]
    targets = sorted({check_integer("nec", nec, 1) for nec in necs})  # a target above K means every concept
    lower = torch.from_numpy(constraints.lower.astype(np.float32))
    upper = torch.from_numpy(constraints.upper.astype(np.float32))
    path = l1_path(refitter, lower, upper, config, [min(t, k) for t in targets], progress)
    students = []
    for target in targets:
        weight, bias = path.points[min(target, k)]
        student = template.copy(config=replace(config, nec=target), info={**template.info, "path": path.records})
        support = _select_support(weight, min(target, k), constraints.forced_nonzero)
        students.append(_finish_kd(student, refitter, constraints, weight.numpy().astype(np.float64),
                                   bias.numpy(), support, 0.0, progress))
        student.info["seconds"] = time.perf_counter() - start
    return students


def distill(features, config: DistillConfig | None = None, constraints: Constraints | None = None,
            init: LinearStudent | None = None, progress: bool = False) -> LinearStudent:
    """Fit on the training rows of a :class:`~infincond.features.FeatureSet`."""
    train = ~features.is_val
    return fit(features.concept_scores[train], features.teacher_logits[train], config, constraints, init, progress,
               labels=features.labels_as_classes[train])


def distill_sweep(features, necs: Sequence[int], config: DistillConfig | None = None,
                  progress: bool = False) -> list[LinearStudent]:
    """:func:`fit_sweep` on the training rows of a FeatureSet: one student per NEC target, sorted."""
    train = ~features.is_val
    return fit_sweep(features.concept_scores[train], features.teacher_logits[train], necs, config,
                     progress=progress, labels=features.labels_as_classes[train])
