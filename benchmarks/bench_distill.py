"""Distillation speed and quality on synthetic concept scores from a planted sparse linear teacher.

1. Time to distil N=50,000, K=600, C=10 (40,000 train / 10,000 validation) with the default solver
   vs. scikit-learn LogisticRegression(penalty="l1", solver="saga") fitted to the teacher's top-1
   labels, compared at matched validation fidelity (ratio = sklearn time / our time).
2. Fidelity vs. NEC: our default against the seed paper's recipe (20 BCE models, L1) on the same
   features, at equal (or lower, for ours) effective concepts per class.
Run: python benchmarks/bench_distill.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

from infincond import DistillConfig, fit
from infincond.testing import planted_problem


def fidelity(logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == teacher_logits.argmax(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 10x smaller problem, for a smoke run")
    args = parser.parse_args()
    n, k, c = (5000, 600, 10) if args.quick else (50_000, 600, 10)
    scores, teacher_logits, _ = planted_problem(n=n, k=k, c=c, nec=8, noise=1.0, seed=0)
    n_train = int(0.8 * n)
    train_x, train_t = scores[:n_train], teacher_logits[:n_train]
    val_x, val_t = scores[n_train:], teacher_logits[n_train:]
    print(f"N={n} (train {n_train}), K={k}, C={c}; torch threads {torch.get_num_threads()}")

    # --- 1. speed at matched fidelity ------------------------------------------------------------
    ours = []
    for nec in (4, 8, 16, 32):
        start = time.perf_counter()
        student = fit(train_x, train_t, DistillConfig(nec=nec))
        seconds = time.perf_counter() - start
        ours.append({"nec": student.nec, "fidelity": fidelity(student.logits(val_x), val_t), "seconds": seconds})
        print(f"ours   nec={nec:3d}  fidelity {ours[-1]['fidelity']:.4f}  time {seconds:7.2f}s")

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean, std = train_x.mean(0), train_x.std(0)
    std_train, std_val = (train_x - mean) / std, (val_x - mean) / std
    top1 = train_t.argmax(1)
    sk = []
    for inverse_l1 in (0.001, 0.01, 0.1):
        model = LogisticRegression(l1_ratio=1.0, C=inverse_l1, solver="saga", max_iter=100, tol=1e-4)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(std_train, top1)
        seconds = time.perf_counter() - start
        nec = float(np.count_nonzero(model.coef_, axis=1).mean())
        sk.append({"C": inverse_l1, "nec": nec, "fidelity": fidelity(model.decision_function(std_val), val_t),
                   "seconds": seconds})
        print(f"sklearn saga C={inverse_l1:<6} nec={nec:6.1f}  fidelity {sk[-1]['fidelity']:.4f}  time {seconds:7.2f}s")

    print("\nmatched fidelity (our fastest run at >= sklearn's fidelity):")
    for run in sk:
        matches = [o for o in ours if o["fidelity"] >= run["fidelity"]]
        if matches:
            best = min(matches, key=lambda o: o["seconds"])
            print(
                f"  sklearn C={run['C']:<6} fid {run['fidelity']:.4f} {run['seconds']:7.2f}s  "
                f"vs ours nec={best['nec']:.0f} fid {best['fidelity']:.4f} {best['seconds']:6.2f}s  "
                f"-> speed-up {run['seconds'] / best['seconds']:6.1f}x"
            )
        else:
            print(f"  sklearn C={run['C']}: fidelity {run['fidelity']:.4f} above every run of ours")

    # --- 2. fidelity vs NEC against the seed paper's recipe ----------------------------------------
    print("\nfidelity vs NEC (baseline: 20 BCE models + L1, averaged; ours capped at floor(baseline NEC)):")
    for l1 in (1e-1, 3e-2, 1e-2, 3e-3, 1e-4):
        start = time.perf_counter()
        base = fit(train_x, train_t, DistillConfig(method="bce_ensemble", l1=l1, max_iter=200))
        base_seconds = time.perf_counter() - start
        base_fid = fidelity(base.logits(val_x), val_t)
        cap = max(1, math.floor(base.nec))
        start = time.perf_counter()
        mine = fit(train_x, train_t, DistillConfig(nec=cap))
        my_seconds = time.perf_counter() - start
        my_fid = fidelity(mine.logits(val_x), val_t)
        print(
            f"  baseline l1={l1:<7} NEC {base.nec:6.1f} fid {base_fid:.4f} ({base_seconds:6.1f}s) | "
            f"ours NEC {mine.nec:5.1f} fid {my_fid:.4f} ({my_seconds:5.1f}s) | "
            f"fidelity gain {100 * (my_fid - base_fid):+5.1f} pts"
        )


if __name__ == "__main__":
    main()
