"""The L1 path to an NEC target: decreasing L1 strengths until every class uses at least ``nec`` concepts,
solved on small working sets (strong rules, checked by KKT on every concept)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import DistillConfig
from .refit import Refitter
from .solvers import ConvergenceWarning, prox


@dataclass
class PathResult:
    """Where the path reached each NEC target: ``points[target]`` = (weight (C, K), bias (C,)) at the first
    L1 strength where every class uses at least ``target`` concepts (or where the path ended), and one
    record per L1 strength tried."""

    points: dict[int, tuple[torch.Tensor, torch.Tensor]]
    records: list[dict]


def l1_path(refitter: Refitter, lower: torch.Tensor, upper: torch.Tensor, config: DistillConfig,
            targets: Sequence[int], progress: bool = False) -> PathResult:
    """Follow L1 strengths from lambda_max down by ``config.path_min_ratio`` until every class has at
    least ``max(targets)`` non-zero weights, keeping the point where each target is first reached (one
    path serves a whole sparsity sweep; a ConvergenceWarning says when it ends short of a target).
    ``lower`` / ``upper`` (C, K) are the box constraints, float32."""
    targets = sorted(set(int(t) for t in targets))
    target_nec = targets[-1]
    c, k = lower.shape
    problem = refitter.problem(np.arange(k), config.label_weight)
    fixed = lower == upper
    free = ~fixed
    forced = (lower > 0) | (upper < 0)
    weight = prox(torch.zeros(c, k), 0.0, lower, upper)
    bias = refitter.objective(config.label_weight).null_bias.clone()
    grad_w, _ = problem.gradients(weight, bias)
    lam_max = float(grad_w.abs()[free].max()) if bool(free.any()) else 0.0
    lambdas = lam_max * np.geomspace(1.0, config.path_min_ratio, config.path_steps)[1:]
    records: list[dict] = []
    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    previous = lam_max
    bar = tqdm(lambdas, desc=f"L1 path to NEC={target_nec}", disable=not progress)
    for lam in bar:  # the path stops early: the bar is closed below, or Gradio keeps showing it
        lam = float(lam)
        # Strong rules (Tibshirani et al. 2012) guess the working set; KKT checks on all concepts add any
        # concept they missed, so the path is exact while iterating on few columns.
        working = (weight != 0).any(0) | forced.any(0) | ((grad_w.abs() * free).amax(0) >= 2 * lam - previous)
        iters = 0
        for _ in range(10):
            columns = torch.nonzero(working).flatten()
            result = refitter.problem(columns.numpy(), config.label_weight).fista(
                weight[:, columns], bias, lam, lower[:, columns], upper[:, columns], config.path_iter, config.tol)
            bias, iters = result.bias, iters + result.iterations
            weight = torch.zeros(c, k)
            weight[:, columns] = result.weight
            grad_w, _ = problem.gradients(weight, bias)
            missed = ((grad_w.abs() > lam * (1 + 1e-3)) & free & (weight == 0)).any(0) & ~working
            if not bool(missed.any()):
                break
            working |= missed
        previous = lam
        nnz = (weight != 0).sum(1)
        records.append({"l1": lam, "nec_min": int(nnz.min()), "nec_mean": float(nnz.float().mean()),
                        "iters": iters, "working_set": int(working.sum())})
        points.update({t: (weight, bias) for t in targets if t not in points and int(nnz.min()) >= t})
        if len(points) == len(targets):
            break
    bar.close()
    short = int((weight != 0).sum(1).min())
    for target in targets:
        if target not in points:
            warnings.warn(f"The L1 path ended (L1 strength {records[-1]['l1'] if records else lam_max:.3g}) with "
                          f"{short} concept(s) for some class, short of the NEC target {target}: that class "
                          "cannot use more under these constraints and data. Lower path_min_ratio to go further.",
                          ConvergenceWarning, stacklevel=2)
            points[target] = (weight, bias)
    return PathResult(points, records)
