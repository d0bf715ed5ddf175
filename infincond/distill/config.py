"""DistillConfig: every setting of a distillation, with its default, checked where it enters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal, get_args

from ..checks import check_choice, check_integer, check_label_weight, check_number

Method = Literal["kd", "bce_ensemble"]
METHODS: tuple[str, ...] = get_args(Method)


@dataclass
class DistillConfig:
    """Settings of a distillation; every default lives here (the CLI and the app read them from here)."""

    method: Method = field(default="kd", metadata={"help": "'kd' (softmax distillation, L1 path to the NEC "
                                                           "target, refit) or 'bce_ensemble' (the seed paper's)."})
    nec: int | None = field(default=5, metadata={"help": "Effective (non-zero) concepts per class for 'kd'; "
                                                         "None fits with the fixed l1 instead."})
    temperature: float = field(default=1.0, metadata={"help": "Distillation temperature T (> 0)."})
    l1: float | None = field(default=None, metadata={"help": "L1 strength (mean loss units); None: 1e-4 for "
                                                             "'bce_ensemble', 1e-3 for 'kd' without nec."})
    l2: float = field(default=1e-4, metadata={"help": "L2 strength."})
    ensemble: int | None = field(default=None, metadata={"help": "Bootstrap members (None: 1 for 'kd', 20 for "
                                                                 "'bce_ensemble')."})
    path_steps: int = field(default=24, metadata={"help": "Points on the L1 path."})
    path_min_ratio: float = field(default=1e-3, metadata={"help": "Smallest L1 strength of the path / largest."})
    path_iter: int = field(default=60, metadata={"help": "Solver iterations per path point."})
    max_iter: int = field(default=400, metadata={"help": "Solver iterations of the final refit."})
    tol: float = field(default=1e-5, metadata={"help": "Relative change that stops the solver."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resamples."})
    label_weight: float = field(default=0.0, metadata={"help": "alpha: the student fits (1 - alpha) x teacher "
                                                                "probabilities + alpha x one-hot label, where "
                                                                "labels exist. 0 = pure distillation."})

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
        self.label_weight = check_label_weight(self.label_weight)

    @property
    def members(self) -> int:
        """Bootstrap members actually fitted."""
        return self.ensemble or (20 if self.method == "bce_ensemble" else 1)

    @property
    def l1_strength(self) -> float:
        """The L1 strength in use."""
        return self.l1 if self.l1 is not None else (1e-4 if self.method == "bce_ensemble" else 1e-3)

    @property
    def fit_temperature(self) -> float:
        """The temperature the targets are softened at (BCE fits the plain probabilities)."""
        return self.temperature if self.method == "kd" else 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DistillConfig:
        """Settings saved by :meth:`to_dict` (unknown keys are a clear error)."""
        from ..errors import ConfigError

        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"Unknown distillation settings {sorted(unknown)}.")
        return cls(**values)
