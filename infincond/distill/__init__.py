"""Distillation: fit a sparse linear student over standardised concept scores that mimics a teacher.

``config`` (DistillConfig), ``constraints`` (box constraints on weights), ``solvers`` (losses, targets,
FISTA), ``path`` (the L1 path to an NEC target), ``refit`` (the one constrained refit), ``fit`` (the two
recipes: "kd" and the seed paper's "bce_ensemble").
"""

from .config import METHODS, DistillConfig
from .constraints import Constraints
from .fit import distill, distill_sweep, fit, fit_sweep
from .refit import Refitter
from .solvers import ConvergenceWarning, soft_targets

__all__ = ["METHODS", "Constraints", "ConvergenceWarning", "DistillConfig", "Refitter", "distill", "distill_sweep",
           "fit", "fit_sweep", "soft_targets"]
