"""The history of a tuning session: immutable states stored sparsely, and the cursor that undo, redo and
jump move, so that every move is exact."""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from ..distill import Constraints
from ..errors import ConfigError


class Kind(IntEnum):
    """The constraint a weight is under (stored as int8 in the session's arrays)."""

    FREE = 0
    UP = 1
    DOWN = 2
    REMOVED = 3
    LOCKED = 4
    HELD = 5  # a proxy of a removed concept, held at 0 with it


class State:
    """One point of the history. Stored sparsely (the non-zero weights, the constrained entries), so that
    a long history of a 1000-class student stays small; the dense (C, K) arrays are built on demand,
    read-only, and kept only while the state is current (:meth:`release`), as is ``cache``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, constraints: Constraints, kind: np.ndarray,
                 label_weight: float, metrics: dict) -> None:
        self.shape = weight.shape
        nonzero = np.nonzero(weight)
        self._weights = (nonzero, np.asarray(weight, dtype=np.float64)[nonzero])
        constrained = np.nonzero(kind)
        self._bounds = (constrained, kind[constrained].astype(np.int8),
                        constraints.lower[constrained].astype(np.float64),
                        constraints.upper[constrained].astype(np.float64))
        self.bias = np.array(bias, dtype=np.float64)
        self.bias.setflags(write=False)
        self.label_weight = float(label_weight)
        self.metrics = metrics
        self._dense: dict[str, np.ndarray] = {}
        #: What views derive from this state (influence, disagreement subsets, ...), computed once while it
        #: is current; the state never changes, so neither does anything derived from it.
        self.cache: dict = {}

    def _build(self, name: str) -> np.ndarray:
        if name not in self._dense:
            if name == "weight":
                where, values = self._weights
                array = np.zeros(self.shape)
            else:
                where, kinds, lows, highs = self._bounds
                fill = {"kind": 0, "lower": -np.inf, "upper": np.inf}[name]
                values = {"kind": kinds, "lower": lows, "upper": highs}[name]
                array = np.full(self.shape, fill, dtype=np.int8 if name == "kind" else np.float64)
            array[where] = values
            array.setflags(write=False)
            self._dense[name] = array
        return self._dense[name]

    weight = property(lambda self: self._build("weight"), doc="Weights (C, K) float64, read-only.")
    lower = property(lambda self: self._build("lower"), doc="Lower bounds (C, K), -inf where free.")
    upper = property(lambda self: self._build("upper"), doc="Upper bounds (C, K), inf where free.")
    kind = property(lambda self: self._build("kind"), doc="Kinds (C, K) int8, values of edits.Kind.")

    @property
    def constraints(self) -> Constraints:
        """The state's bounds (copies)."""
        return Constraints(self.lower.copy(), self.upper.copy())

    def describe(self, c: int, k: int) -> dict:
        """The constraint on weight (c, k): its kind's name, its bounds and the weight."""
        return {"kind": Kind(self.kind[c, k]).name.lower(), "lower": float(self.lower[c, k]),
                "upper": float(self.upper[c, k]), "weight": float(self.weight[c, k])}

    def release(self, derived: bool = True) -> None:
        """Drop the dense arrays and the derived data (rebuilt exactly when needed again); with
        ``derived=False`` only the derived arrays (sized by the weights), the small reports kept."""
        self._dense.clear()
        if derived:
            self.cache.clear()
        else:
            for name in [name for name, value in self.cache.items() if isinstance(value, np.ndarray)]:
                del self.cache[name]

    @property
    def nbytes(self) -> int:
        """Bytes held by the state's arrays, dense ones included while it is current."""
        (where, values), (cwhere, *bounds) = self._weights, self._bounds
        arrays = [*where, values, *cwhere, *bounds, self.bias, *self._dense.values()]
        return int(sum(a.nbytes for a in arrays))


#: States left most recently that keep their derived reports (metrics, audit: small), so that undo, redo
#: and jumps among them re-derive only what the weights give at once.
WARM_STATES = 8


class History:
    """The states reached so far and where the session stands among them. ``move`` to a state (after an
    edit, a blend or a jump) pushes the current one on the undo stack and clears the redo stack."""

    def __init__(self, first: State) -> None:
        self.states: list[State] = [first]
        self.cursor = 0
        self.past: list[int] = []
        self.future: list[int] = []
        self.warm: list[int] = []  # states left last, oldest first, that keep their derived reports

    @property
    def current(self) -> State:
        return self.states[self.cursor]

    def add(self, state: State) -> int:
        """Store a new state; returns its index."""
        self.states.append(state)
        return len(self.states) - 1

    def _go(self, target: int) -> None:
        """Make ``target`` current (the one left keeps its sparse form, and its derived reports while among the
        :data:`WARM_STATES` left last)."""
        if target != self.cursor:
            left = self.cursor
            if left < len(self.states):
                self.states[left].release(derived=False)
            self.warm = [i for i in self.warm if i not in (left, target) and i < len(self.states)] + [left]
            while len(self.warm) > WARM_STATES:
                self.states[self.warm.pop(0)].release()
        self.cursor = target

    def move(self, target: int) -> None:
        self.past.append(self.cursor)
        self.future.clear()
        self._go(target)

    def undo(self) -> None:
        """Back to the state before the last move."""
        self._step(self.past, self.future, "Nothing to undo.")

    def redo(self) -> None:
        """Forward again after an undo."""
        self._step(self.future, self.past, "Nothing to redo.")

    def _step(self, source: list[int], target: list[int], empty: str) -> None:
        if not source:
            raise ConfigError(empty)
        target.append(self.cursor)
        self._go(source.pop())

    def checkpoint(self) -> tuple:
        """A mark to :meth:`rollback` to."""
        return len(self.states), self.cursor, list(self.past), list(self.future)

    def rollback(self, mark: tuple) -> None:
        """Forget every state and move since :meth:`checkpoint`."""
        n_states, cursor, past, future = mark
        del self.states[n_states:]
        self.cursor = min(self.cursor, n_states - 1)
        self._go(cursor)
        self.past, self.future = list(past), list(future)
