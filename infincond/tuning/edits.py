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
``remove``: the weight is held at 0, and so are the concept's proxies for that class (the concepts that
    track it within classes, :mod:`infincond.proxies`): they measure the same thing, so a plain refit that
    follows a biased teacher hands the removed weight to them (on the Shapes world, removing ``water`` for
    circle moved ``water pipe`` from 0.41 to 2.61), and a student may already carry the concept in them
    (one spread ``water`` over five proxies, 0.26 on ``water`` itself). ``proxies`` names the ones to hold
    (None: found when the edit is applied, less the ``released`` ones); ``label_weight`` blends the labels
    into the same refit ("fix with labels"). ``lock``: held at its current value.
    ``restore``: the constraint is dropped (the weight is free again if the distilled student used it, else
    back at 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np

from ..checks import check_factor, check_label_weight
from ..distill import Constraints
from ..errors import ConfigError, ConstraintError
from .history import Kind

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


@dataclass(frozen=True)
class Edit:
    """One user edit: ``action`` on ``concept`` for ``class_name`` (None: every class).

    ``factor`` (> 1, default 2) is for up / down only; ``bounded`` keeps the interval free instead of
    holding the weight at the value asked for (see the module docstring). For remove only: ``proxies``,
    the concepts held with it (None: found when applied, less ``released``; () holds none), and
    ``label_weight``, the label blend (alpha) of its refit (None: the session's).
    """

    action: str
    concept: str
    class_name: str | None = None
    factor: float | None = None
    bounded: bool = False
    proxies: tuple[str, ...] | None = None
    released: tuple[str, ...] = ()
    label_weight: float | None = None

    def __post_init__(self) -> None:
        action = Action.parse(self.action)
        object.__setattr__(self, "action", action.value)
        if action.scales:
            object.__setattr__(self, "factor", check_factor(DEFAULT_FACTOR if self.factor is None else self.factor))
        elif self.factor is not None:
            raise ConfigError(f"A factor applies to up-tune and down-tune only, not to {action.value}.")
        if self.bounded and not action.scales:
            raise ConfigError("bounded applies to up-tune and down-tune only.")
        for name in ("proxies", "released"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of concepts, not {value!r}.")
            object.__setattr__(self, name, tuple(value))
        if action != Action.REMOVE and (self.proxies or self.released or self.label_weight is not None):
            raise ConfigError("proxies, released and label_weight apply to remove only.")
        if self.label_weight is not None:
            object.__setattr__(self, "label_weight", check_label_weight(self.label_weight))

    def describe(self) -> str:
        """A short human sentence, e.g. "down-tune 'water' for circle x2"."""
        target = f"for {self.class_name}" if self.class_name is not None else "for every class"
        factor = f" x{self.factor:g}" if self.factor is not None else ""
        bounded = " (bounded)" if self.bounded else ""
        word = Action(self.action).label.lower()
        held = f", holding {len(self.proxies)} prox{'y' if len(self.proxies) == 1 else 'ies'}" if self.proxies else ""
        released = f", {len(self.released)} released" if self.released else ""
        labels = f", labels blended at alpha {self.label_weight:g}" if self.label_weight is not None else ""
        return f"{word} '{self.concept}' {target}{factor}{bounded}{held}{released}{labels}"

    def to_dict(self) -> dict:
        """The parameters that re-create the edit (a remove's proxies, release and blend only for removes)."""
        out = asdict(self)
        if self.action != Action.REMOVE.value:
            for name in ("proxies", "released", "label_weight"):
                del out[name]
        else:
            out["proxies"] = None if self.proxies is None else list(self.proxies)
            out["released"] = list(self.released)
        return out


@dataclass
class Constrained:
    """What an edit does to a state: new bounds and kinds (C, K), the weights to start the refit from, the
    (class, concept) pairs it edited, and the (class, concept) pairs it holds (a remove's proxies)."""

    constraints: Constraints
    kind: np.ndarray
    start: np.ndarray
    edited: list[tuple[int, int]]
    held: list[tuple[int, int]] = field(default_factory=list)


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
              kind: np.ndarray, support: np.ndarray, names: tuple[str, list[str]],
              proxies: Sequence[int] = ()) -> Constrained:
    """The bounds ``edit`` puts on concept ``k`` (for ``class_id``, None: every class), given the current
    weight (C, K), constraints, kinds and the distilled ``support`` (C, K); ``names`` = (the concept's text,
    the class names) for messages; ``proxies`` (concept indices) are held at 0 for every class a remove edits
    (those already under a constraint keep theirs). Pure: nothing is changed; a contradictory edit raises
    ConstraintError."""
    concept, class_names = names
    action = Action(edit.action)
    lower, upper, kind = constraints.lower.copy(), constraints.upper.copy(), kind.copy()
    start = np.array(weight, dtype=np.float64)
    held: list[tuple[int, int]] = []
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
            value = f"held at {weight[c, k]:.4g}" if current == Kind.LOCKED else "held at 0"
            raise ConstraintError(f"Contradictory edit: {where} is {current.name.lower()} ({value}), so it cannot "
                                  f"also be {action.past}. Restore it first.")
        w = float(weight[c, k])
        if action == Action.REMOVE:
            lower[c, k] = upper[c, k] = start[c, k] = 0.0
            kind[c, k] = Kind.REMOVED
            for j in proxies:
                if j != k and kind[c, j] == Kind.FREE:
                    lower[c, j] = upper[c, j] = start[c, j] = 0.0
                    kind[c, j] = Kind.HELD
                    held.append((c, int(j)))
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
    return Constrained(result, kind, start, [(c, k) for c in rows], held)
