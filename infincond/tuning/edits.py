"""Edits and what they mean: an :class:`Edit` on a (concept, class) weight becomes bounds on that weight.

Edits act on the weight w of a (concept, class) pair, or of a concept for every class, in the student's
standardised-score space (see :class:`~infincond.linear.LinearStudent`):

``up`` / ``down`` by a factor x > 1 (the seed paper's bounded constraint, scaled around the current weight):
    - w > 0: up-tune asks for x * w within [w, x * w]; down-tune asks for w / x within [w / x, w].
    - w < 0: "up" raises the weight (the concept counts less against the class): w / x within [w, w / x];
      "down" lowers it: x * w within [x * w, w].
    - w = 0 (a concept the class does not use yet): w is taken as a quarter of the class's typical active
      weight (the median |weight| of the concepts it uses), positive for up-tune and negative for down-tune.
    By default the weight is held at the value asked for (x * w, w / x, ...) while the other weights refit:
    with an unchanged objective the optimum of the bounded problem is the old weight itself, so a merely
    bounded edit would change nothing. ``bounded=True`` keeps the whole interval free instead; the refit
    then moves the weight inside it only when the objective gains (after other edits, or with labels).
``remove``: the weight is held at 0. ``lock``: held at its current value. ``restore``: the constraint is
    dropped (the weight is free again if the distilled student used it, else back at 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum, IntEnum

import numpy as np

from ..distill import Constraints
from ..errors import ConfigError, ConstraintError

UNUSED_FRACTION = 0.25
DEFAULT_FACTOR = 2.0


class Action(str, Enum):
    """What an edit does; the value is what logs store, ``label`` what people read."""

    UP = "up"
    DOWN = "down"
    REMOVE = "remove"
    LOCK = "lock"
    RESTORE = "restore"

    @property
    def label(self) -> str:
        """The button's word: "Up-tune", "Down-tune", "Remove", "Lock", "Restore"."""
        return {"up": "Up-tune", "down": "Down-tune"}.get(self.value, self.value.capitalize())

    @property
    def past(self) -> str:
        """The past participle: "up-tuned", "removed", "locked", ..."""
        return {"up": "up-tuned", "down": "down-tuned", "lock": "locked"}.get(self.value, self.value + "d")

    @property
    def scales(self) -> bool:
        """Whether the edit takes a factor (up- and down-tune)."""
        return self in (Action.UP, Action.DOWN)

    @classmethod
    def parse(cls, value: object) -> Action:
        """An action from its value ("up") or its label ("Up-tune"), else a clear ConfigError."""
        for action in cls:
            if value in (action, action.value, action.label):
                return action
        raise ConfigError(f"Unknown edit action {value!r}; use one of {[a.value for a in cls]}.")


class Kind(IntEnum):
    """The constraint a weight is under (stored as int8 in the session's arrays)."""

    FREE = 0
    UP = 1
    DOWN = 2
    REMOVED = 3
    LOCKED = 4


@dataclass(frozen=True)
class Edit:
    """One user edit: ``action`` on ``concept`` for ``class_name`` (None: every class).

    ``factor`` (> 1, default 2) is for up / down only; ``bounded`` keeps the interval free instead of
    holding the weight at the value asked for (see the module docstring).
    """

    action: str
    concept: str
    class_name: str | None = None
    factor: float | None = None
    bounded: bool = False

    def __post_init__(self) -> None:
        action = Action.parse(self.action)
        object.__setattr__(self, "action", action.value)
        if action.scales:
            factor = DEFAULT_FACTOR if self.factor is None else self.factor
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                    or factor <= 0:
                raise ConfigError(f"The tuning factor must be a positive number, not {self.factor!r}.")
            if factor <= 1:
                raise ConfigError(f"The tuning factor must be greater than 1, not {factor:g}: up-tune multiplies "
                                  "the concept's influence by it and down-tune divides it.")
            object.__setattr__(self, "factor", float(factor))
        elif self.factor is not None:
            raise ConfigError(f"A factor applies to up-tune and down-tune only, not to {action.value}.")
        if self.bounded and not action.scales:
            raise ConfigError("bounded applies to up-tune and down-tune only.")

    def describe(self) -> str:
        """A short human sentence, e.g. "down-tune 'water' for circle x2"."""
        target = f"for {self.class_name}" if self.class_name is not None else "for every class"
        factor = f" x{self.factor:g}" if self.factor is not None else ""
        bounded = " (bounded)" if self.bounded else ""
        word = Action(self.action).label.lower()
        return f"{word} '{self.concept}' {target}{factor}{bounded}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Constrained:
    """What an edit does to a state: new bounds and kinds (C, K), the weights to start the refit from, and
    the (class, concept) pairs it edited."""

    constraints: Constraints
    kind: np.ndarray
    start: np.ndarray
    edited: list[tuple[int, int]]


def typical_weight(weight: np.ndarray, c: int) -> float:
    """The median |weight| of the concepts class ``c`` uses (of every class if it uses none; 1 if none)."""
    for values in (weight[c], weight):
        active = np.abs(values[values != 0])
        if active.size:
            return float(np.median(active))
    return 1.0


def _rows(edit: Edit, k: int, class_id: int | None, weight: np.ndarray, kind: np.ndarray,
          names: tuple[str, list[str]]) -> list[int]:
    """The classes an edit of concept ``k`` applies to."""
    concept, class_names = names
    if class_id is not None:
        return [class_id]
    if Action(edit.action).scales:
        rows = [c for c in range(len(class_names)) if weight[c, k] != 0]
        if not rows:
            raise ConstraintError(f"No class uses '{concept}' yet, so there is no influence to {edit.action}-tune "
                                  "for every class: choose the class to tune it for.")
        return rows
    if edit.action == Action.RESTORE:
        rows = [c for c in range(len(class_names)) if kind[c, k] != Kind.FREE]
        if not rows:
            raise ConstraintError(f"'{concept}' has no constraint to restore for any class.")
        return rows
    return list(range(len(class_names)))


def constrain(edit: Edit, k: int, class_id: int | None, weight: np.ndarray, constraints: Constraints,
              kind: np.ndarray, support: np.ndarray, names: tuple[str, list[str]]) -> Constrained:
    """The bounds ``edit`` puts on concept ``k`` (for ``class_id``, None: every class), given the current
    weight (C, K), constraints, kinds and the distilled ``support`` (C, K); ``names`` = (the concept's text,
    the class names) for messages. Pure: nothing is changed; a contradictory edit raises ConstraintError."""
    concept, class_names = names
    action = Action(edit.action)
    lower, upper, kind = constraints.lower.copy(), constraints.upper.copy(), kind.copy()
    start = np.array(weight, dtype=np.float64)
    rows = _rows(edit, k, class_id, weight, kind, names)
    for c in rows:
        current, where = Kind(kind[c, k]), f"'{concept}' for {class_names[c]}"
        if action == Action.RESTORE:
            if current == Kind.FREE:
                raise ConstraintError(f"{where} has no constraint to restore.")
            lower[c, k], upper[c, k], kind[c, k] = -np.inf, np.inf, Kind.FREE
            if not support[c, k]:
                start[c, k] = 0.0
            continue
        if current in (Kind.REMOVED, Kind.LOCKED):
            held = f"held at {weight[c, k]:.4g}" if current == Kind.LOCKED else "held at 0"
            raise ConstraintError(f"Contradictory edit: {where} is {current.name.lower()} ({held}), so it cannot "
                                  f"also be {action.past}. Restore it first.")
        w = float(weight[c, k])
        if action == Action.REMOVE:
            lower[c, k] = upper[c, k] = start[c, k] = 0.0
            kind[c, k] = Kind.REMOVED
        elif action == Action.LOCK:
            lower[c, k] = upper[c, k] = start[c, k] = w
            kind[c, k] = Kind.LOCKED
        else:
            x = float(edit.factor)
            if w == 0:
                base = UNUSED_FRACTION * typical_weight(weight, c)
                w = base if action == Action.UP else -base
                near, far = w, x * w
            elif (w > 0) == (action == Action.UP):
                near, far = w, x * w  # the influence grows: away from zero
            else:
                near, far = w, w / x  # the influence shrinks: toward zero
            if edit.bounded:
                lower[c, k], upper[c, k] = min(near, far), max(near, far)
            else:
                lower[c, k] = upper[c, k] = far
            start[c, k] = far
            kind[c, k] = Kind.UP if action == Action.UP else Kind.DOWN
    result = Constraints(lower, upper)
    result.validate(*weight.shape)
    return Constrained(result, kind, start, [(c, k) for c in rows])
