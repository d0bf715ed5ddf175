"""No-code fine-tuning: concept edits become weight constraints, the student refits under them, and every
action lands in a provenance log that can be undone, exported, imported and replayed.

Edits act on the weight of a (concept, class) pair, or of a concept for every class, in the student's
standardised-score space (see :class:`~infincond.distill.LinearStudent`):

``up`` / ``down`` by a factor x > 1 (the seed paper's bounded constraint, scaled around the current weight w):
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

After each edit, every free weight of the student's support refits to the distillation objective, in which
the labels can be blended with the teacher (``label_weight``, alpha); every constraint holds exactly.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .concepts.corpus import normalize_concept
from .concepts.encoder import ConceptEncoder
from .distill import Constraints, DistillConfig, LinearStudent, Refitter
from .errors import ConfigError, ConstraintError
from .features import FeatureSet
from .metrics import Metrics, evaluate, snapshot, teacher_terms
from .storage import atomic_write_text
from .student import ConceptStudent

ACTIONS = ("up", "down", "remove", "lock", "restore")
#: What a log entry can record.
LOG_ACTIONS = ("start", "edit", "label_weight", "undo", "redo", "jump")
ACTION_WORDS = {"up": "up-tune", "down": "down-tune", "remove": "remove", "lock": "lock", "restore": "restore"}
KINDS = ("free", "up", "down", "removed", "locked")
FREE, UP, DOWN, REMOVED, LOCKED = range(len(KINDS))
UNUSED_FRACTION = 0.25
DEFAULT_FACTOR = 2.0
LOG_FORMAT = "infincond-tuning-log"
#: Version 2 writes unbounded constraint ends as ``null`` (version 1 could not hold them); both are read.
LOG_VERSION = 2
READABLE_LOG_VERSIONS = (1, 2)
#: Tuning logs larger than this are refused before they are parsed.
MAX_LOG_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Edit:
    """One user edit: ``action`` in :data:`ACTIONS` on ``concept`` for ``class_name`` (None: every class).

    ``factor`` (> 1, default 2) is for up / down only; ``bounded`` keeps the interval free instead of
    holding the weight at the value asked for (see the module docstring).
    """

    action: str
    concept: str
    class_name: str | None = None
    factor: float | None = None
    bounded: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"Unknown edit action {self.action!r}; use one of {ACTIONS}.")
        if self.action in ("up", "down"):
            factor = DEFAULT_FACTOR if self.factor is None else float(self.factor)
            if not math.isfinite(factor) or factor <= 0:
                raise ConfigError(f"The tuning factor must be a positive number, not {self.factor!r}.")
            if factor <= 1:
                raise ConfigError(f"The tuning factor must be greater than 1, not {factor:g}: up-tune multiplies "
                                  "the concept's influence by it and down-tune divides it.")
            object.__setattr__(self, "factor", factor)
        elif self.factor is not None:
            raise ConfigError(f"A factor applies to up-tune and down-tune only, not to {self.action}.")
        if self.bounded and self.action not in ("up", "down"):
            raise ConfigError("bounded applies to up-tune and down-tune only.")

    def describe(self) -> str:
        """A short human sentence, e.g. "down-tune 'water' for circle x2"."""
        target = f"for {self.class_name}" if self.class_name is not None else "for every class"
        factor = f" x{self.factor:g}" if self.factor is not None else ""
        bounded = " (bounded)" if self.bounded else ""
        return f"{ACTION_WORDS[self.action]} '{self.concept}' {target}{factor}{bounded}"

    def to_dict(self) -> dict:
        return asdict(self)


class _State:
    """One point of the history. Stored sparsely (the non-zero weights, the constrained entries), so that
    a long history of a 1000-class student stays small; the dense (C, K) arrays are built on demand,
    read-only, and kept only while the state is current (:meth:`release`)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, lower: np.ndarray, upper: np.ndarray, kind: np.ndarray,
                 label_weight: float, metrics: dict) -> None:
        self.shape = weight.shape
        nonzero = np.nonzero(weight)
        self._weights = (nonzero, np.asarray(weight, dtype=np.float64)[nonzero])
        constrained = np.nonzero(kind)
        self._bounds = (constrained, kind[constrained].astype(np.int8), lower[constrained].astype(np.float64),
                        upper[constrained].astype(np.float64))
        self.bias = np.array(bias, dtype=np.float64)
        self.bias.setflags(write=False)
        self.label_weight = float(label_weight)
        self.metrics = metrics
        self._dense: dict[str, np.ndarray] = {}

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
    kind = property(lambda self: self._build("kind"), doc="Kinds (C, K) int8, indices into KINDS.")

    def release(self) -> None:
        """Drop the dense arrays (rebuilt exactly when needed again)."""
        self._dense.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held by the state's arrays, dense ones included while it is current."""
        (where, values), (cwhere, *bounds) = self._weights, self._bounds
        arrays = [*where, values, *cwhere, *bounds, self.bias, *self._dense.values()]
        return int(sum(a.nbytes for a in arrays))


def _metric_delta(before: dict | None, after: dict) -> dict:
    """after - before for the headline and per-class metrics (None where either is missing)."""
    if before is None:
        return {}

    def sub(a, b):
        return None if a is None or b is None else a - b

    out = {key: sub(after[key], before[key]) for key in ("fidelity", "accuracy", "kl", "nec")}
    out["per_class"] = {name: {key: sub(after["per_class"][name][key], before["per_class"][name][key])
                               for key in after["per_class"][name]} for name in after["per_class"]}
    return out


@dataclass
class LogEntry:
    """One action of the provenance log: what was done, when, and the metrics before and after.

    ``action``: "start", "edit", "label_weight", "undo", "redo" or "jump"; ``params`` re-creates it;
    ``state`` / ``state_before`` index the session's states; ``changes`` lists the edited weights;
    ``refit`` holds the solver's iterations and seconds for actions that refit.
    """

    step: int
    action: str
    params: dict
    summary: str
    time: str
    state_before: int | None
    state: int
    metrics_before: dict | None
    metrics_after: dict
    changes: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    refit: dict = field(default_factory=dict)

    @property
    def delta(self) -> dict:
        """Metric changes: fidelity, accuracy, kl, nec and per class."""
        return _metric_delta(self.metrics_before, self.metrics_after)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Preview:
    """The what-if of an edit: metrics before and after, and the weights it changes, nothing applied.

    Without a refit, the edited weights sit at the value asked for and nothing else moves.
    """

    edit: Edit
    refitted: bool
    metrics_before: dict
    metrics_after: dict
    changes: list[dict]
    seconds: float

    @property
    def delta(self) -> dict:
        return _metric_delta(self.metrics_before, self.metrics_after)


class _Evaluator:
    """Metrics of weights on fixed rows, fast: standardised scores are kept, and only the concepts some
    class uses enter the product."""

    def __init__(self, features: FeatureSet, rows: np.ndarray, student: LinearStudent) -> None:
        # Column-major, so that the columns of the concepts in use are read contiguously.
        self.x = np.asfortranarray(student.standardise(features.concept_scores[rows]), dtype=np.float32)
        self.teacher_logits = features.teacher_logits[rows]
        self.teacher = teacher_terms(self.teacher_logits)
        self.labels = features.labels_as_classes[rows]
        self.image_ids = features.image_ids[rows]
        self.class_names = list(features.class_names)

    def logits(self, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        columns = np.nonzero(np.any(weight != 0, axis=0))[0]
        out = self.x[:, columns] @ weight[:, columns].T.astype(np.float32)
        return out + bias.astype(np.float32)

    def metrics(self, weight: np.ndarray, bias: np.ndarray) -> Metrics:
        return evaluate(self.logits(weight, bias), self.teacher_logits, self.labels, self.image_ids,
                        self.class_names, np.count_nonzero(weight, axis=1), self.teacher)


def features_key(features: FeatureSet) -> str:
    """A hash of the rows, concepts and classes a session depends on (a replay must see the same)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([features.concepts, features.class_names]).encode())
    for array in (features.concept_scores, features.teacher_logits, features.labels, features.is_val):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class TuningSession:
    """Edits, refits and provenance over one distilled student and the FeatureSet it was fitted on.

    Refits use the FeatureSet's training rows; metrics use its validation rows, or every row of
    ``eval_features`` (the same concepts and classes, e.g. a held-out test split) when given.
    """

    def __init__(self, features: FeatureSet, student: LinearStudent, *, eval_features: FeatureSet | None = None,
                 label_weight: float | None = None) -> None:
        c, k = features.num_classes, features.num_concepts
        if student.weight.shape != (c, k):
            raise ConfigError(f"The student has weights {student.weight.shape}; the features need ({c}, {k}).")
        if eval_features is not None and (eval_features.concepts != features.concepts
                                          or eval_features.class_names != features.class_names):
            raise ConfigError("eval_features must have the same concepts and classes as the features.")
        self.features = features
        self.eval_features = eval_features
        self.concepts, self.class_names = list(features.concepts), list(features.class_names)
        self._concept_index = {name: i for i, name in enumerate(self.concepts)}
        self._normalised_concepts = {normalize_concept(name): i for i, name in enumerate(self.concepts)}
        self.initial = LinearStudent(np.asarray(student.weight, dtype=np.float64).copy(),
                                     np.asarray(student.bias, dtype=np.float64).copy(), student.score_mean.copy(),
                                     student.score_std.copy(), student.config)
        self.support = self.initial.weight != 0
        train = ~features.is_val
        if not train.any():
            raise ConfigError("The features have no training rows (every row is marked validation): nothing to refit on.")
        self.has_labels = bool((features.labels_as_classes[train] >= 0).any())
        self.refitter = Refitter(features.concept_scores[train], features.teacher_logits[train], self.initial,
                                 features.labels_as_classes[train])
        if eval_features is not None:
            self.evaluator = _Evaluator(eval_features, np.ones(len(eval_features.is_val), dtype=bool), self.initial)
        else:
            rows = features.is_val if features.is_val.any() else np.ones_like(features.is_val)
            self.evaluator = _Evaluator(features, rows, self.initial)
        alpha = student.config.label_weight if label_weight is None else float(label_weight)
        self._check_label_weight(alpha)
        inf = np.full((c, k), np.inf)
        first = _State(self.initial.weight, self.initial.bias, -inf, inf, np.zeros((c, k), dtype=np.int8),
                       alpha, snapshot(self.evaluator.metrics(self.initial.weight, self.initial.bias)))
        self.states: list[_State] = [first]
        self.cursor = 0
        self._past: list[int] = []
        self._future: list[int] = []
        self.replay_gap: float | None = None  # set by replay()
        self.log: list[LogEntry] = [LogEntry(0, "start", {"label_weight": alpha}, "distilled student", _now(), None, 0,
                                             None, first.metrics)]

    @classmethod
    def from_run(cls, run, **kwargs) -> TuningSession:
        """A session over a :class:`~infincond.pipeline.DistillationRun`."""
        return cls(run.features, run.linear, **kwargs)

    # -- reading -------------------------------------------------------------------------------------
    @property
    def state(self) -> _State:
        return self.states[self.cursor]

    @property
    def weight(self) -> np.ndarray:
        """Current weights (C, K), read-only."""
        return self.state.weight

    @property
    def label_weight(self) -> float:
        return self.state.label_weight

    @property
    def constraints(self) -> Constraints:
        return Constraints(self.state.lower.copy(), self.state.upper.copy())

    @property
    def student(self) -> LinearStudent:
        """The current student as a :class:`LinearStudent` (a copy)."""
        config = replace(self.initial.config, label_weight=self.label_weight)
        return LinearStudent(self.state.weight.copy(), self.state.bias.copy(), self.initial.score_mean.copy(),
                             self.initial.score_std.copy(), config, info={"tuning_steps": len(self.log) - 1})

    @property
    def metrics(self) -> dict:
        """The current state's metric snapshot (see :func:`snapshot`)."""
        return self.state.metrics

    def concept_student(self, encoder: ConceptEncoder | None = None) -> ConceptStudent:
        """The current student as a Hub-ready :class:`~infincond.student.ConceptStudent`, carrying its
        metrics and the whole log (the actions are also summarised in its ``provenance["tuning"]``)."""
        history = [{"step": e.step, "action": e.action, "summary": e.summary, "time": e.time, "params": e.params}
                   for e in self.log[1:]]
        if self.eval_features is not None:
            source = self.eval_features.provenance.get("dataset", {})
            where = f"images of the evaluation set ({source.get('dataset', '?')}, split {source.get('split', '?')})"
        else:
            where = "held-out validation images of the sample"
        return ConceptStudent.from_linear(self.student, self.features, encoder, provenance={"tuning": history},
                                          metrics={**self.metrics, "evaluated_on": where},
                                          tuning_log=self.export_log())

    def evaluate(self) -> Metrics:
        """Full metrics of the current student on the evaluation rows."""
        return self.evaluator.metrics(self.state.weight, self.state.bias)

    def checkpoint(self) -> tuple:
        """A mark of the whole history (states, cursor, undo / redo stacks, log) to :meth:`rollback` to."""
        return len(self.states), self.cursor, list(self._past), list(self._future), len(self.log), self.replay_gap

    def rollback(self, mark: tuple) -> None:
        """Return to a :meth:`checkpoint`: everything done since is forgotten (what a failed app event needs)."""
        n_states, cursor, past, future, n_log, gap = mark
        del self.states[n_states:]
        del self.log[n_log:]
        self.cursor = min(self.cursor, n_states - 1)
        self._go(cursor)
        self._past, self._future, self.replay_gap = list(past), list(future), gap

    @property
    def can_undo(self) -> bool:
        return bool(self._past)

    @property
    def can_redo(self) -> bool:
        return bool(self._future)

    def constraint(self, concept: str, class_name: str) -> dict:
        """The constraint on one weight: kind (one of :data:`KINDS`), lower and upper bound, weight."""
        k, c = self.concept_id(concept), self.class_id(class_name)
        s = self.state
        return {"kind": KINDS[s.kind[c, k]], "lower": float(s.lower[c, k]), "upper": float(s.upper[c, k]),
                "weight": float(s.weight[c, k])}

    def edits(self) -> list[dict]:
        """Every constrained weight of the current state, as dicts (concept, class, kind, bounds, weight)."""
        s = self.state
        return [{"concept": self.concepts[k], "class_name": self.class_names[c], "kind": KINDS[s.kind[c, k]],
                 "lower": float(s.lower[c, k]), "upper": float(s.upper[c, k]), "weight": float(s.weight[c, k])}
                for c, k in np.argwhere(s.kind != FREE)]

    def concept_id(self, concept: str) -> int:
        """The index of a concept by its text (exact, then case- and space-insensitive)."""
        if concept in self._concept_index:
            return self._concept_index[concept]
        found = self._normalised_concepts.get(normalize_concept(str(concept)))
        if found is None:
            close = difflib.get_close_matches(str(concept), self.concepts, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConstraintError(f"Unknown concept {concept!r}: the student has {len(self.concepts)} concepts "
                                  f"and this is not one of them.{hint}")
        return found

    def class_id(self, class_name: str) -> int:
        """The index of a class by its name (exact, then case- and space-insensitive)."""
        if class_name in self.class_names:
            return self.class_names.index(class_name)
        lookup = {normalize_concept(name): c for c, name in enumerate(self.class_names)}
        found = lookup.get(normalize_concept(str(class_name)))
        if found is None:
            raise ConstraintError(f"Unknown class {class_name!r}; the classes are {self.class_names}.")
        return found

    # -- edits -> constraints ------------------------------------------------------------------------
    def _typical_weight(self, weight: np.ndarray, c: int) -> float:
        """The median |weight| of the concepts class ``c`` uses (of every class if it uses none; 1 if none)."""
        for values in (weight[c], weight):
            active = np.abs(values[values != 0])
            if active.size:
                return float(np.median(active))
        return 1.0

    def _constrain(self, edit: Edit, state: _State) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
        """New (lower, upper, kind, start weight, edited (c, k) pairs) for ``edit`` applied to ``state``;
        raises a clear error when the edit cannot be applied."""
        k = self.concept_id(edit.concept)
        weight = state.weight
        name = self.concepts[k]
        if edit.class_name is not None:
            rows = [self.class_id(edit.class_name)]
        elif edit.action in ("up", "down"):
            rows = [c for c in range(len(self.class_names)) if weight[c, k] != 0]
            if not rows:
                raise ConstraintError(f"No class uses '{name}' yet, so there is no influence to {edit.action}-tune "
                                      "for every class: choose the class to tune it for.")
        elif edit.action == "restore":
            rows = [c for c in range(len(self.class_names)) if state.kind[c, k] != FREE]
        else:
            rows = list(range(len(self.class_names)))
        lower, upper, kind = state.lower.copy(), state.upper.copy(), state.kind.copy()
        start = weight.copy()
        if edit.action == "restore" and not rows:
            raise ConstraintError(f"'{name}' has no constraint to restore for "
                                  f"{edit.class_name if edit.class_name is not None else 'any class'}.")
        for c in rows:
            current, where = KINDS[state.kind[c, k]], f"'{name}' for {self.class_names[c]}"
            if edit.action == "restore":
                if current == "free":
                    raise ConstraintError(f"{where} has no constraint to restore.")
                lower[c, k], upper[c, k], kind[c, k] = -np.inf, np.inf, FREE
                if not self.support[c, k]:
                    start[c, k] = 0.0
                continue
            if current in ("removed", "locked"):
                held = f"held at {weight[c, k]:.4g}" if current == "locked" else "held at 0"
                raise ConstraintError(f"Contradictory edit: {where} is {current} ({held}), so it cannot also be "
                                      f"{ACTION_WORDS[edit.action]}d. Restore it first.")
            w = float(weight[c, k])
            if edit.action == "remove":
                lower[c, k] = upper[c, k] = start[c, k] = 0.0
                kind[c, k] = REMOVED
            elif edit.action == "lock":
                lower[c, k] = upper[c, k] = start[c, k] = w
                kind[c, k] = LOCKED
            else:
                x = float(edit.factor)
                if w == 0:
                    base = UNUSED_FRACTION * self._typical_weight(weight, c)
                    w = base if edit.action == "up" else -base
                    near, far = w, x * w
                elif (w > 0) == (edit.action == "up"):
                    near, far = w, x * w  # the influence grows: away from zero
                else:
                    near, far = w, w / x  # the influence shrinks: toward zero
                if edit.bounded:
                    lower[c, k], upper[c, k] = min(near, far), max(near, far)
                else:
                    lower[c, k] = upper[c, k] = far
                start[c, k] = far
                kind[c, k] = UP if edit.action == "up" else DOWN
        Constraints(lower, upper).validate(*weight.shape)
        return lower, upper, kind, start, [(c, k) for c in rows]

    def _changes(self, before: np.ndarray, after: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 edited: list) -> list[dict]:
        """The edited weights, JSON-safe: an unbounded end of a constraint is ``None``."""
        return [{"concept": self.concepts[k], "class_name": self.class_names[c], "before": float(before[c, k]),
                 "after": float(after[c, k]), "lower": _bound(lower[c, k]), "upper": _bound(upper[c, k])}
                for c, k in edited]

    def preview(self, edit: Edit, refit: bool = False) -> Preview:
        """What ``edit`` would do, without applying it. ``refit=False`` (fast, what a slider needs) moves
        only the edited weights to the value asked for (the far end of a bounded interval);
        ``refit=True`` runs the constrained refit too."""
        start_time = time.perf_counter()
        state = self.state
        lower, upper, _, start, edited = self._constrain(edit, state)
        weight, bias = start, state.bias
        if refit:
            weight, bias, _ = self.refitter.refit(start, state.bias, Constraints(lower, upper), self.support,
                                                  state.label_weight)
        after = snapshot(self.evaluator.metrics(weight, bias))
        return Preview(edit, refit, state.metrics, after, self._changes(state.weight, weight, lower, upper, edited),
                       time.perf_counter() - start_time)

    # -- actions -------------------------------------------------------------------------------------
    def _push(self, weight, bias, lower, upper, kind, label_weight) -> int:
        metrics = snapshot(self.evaluator.metrics(weight, bias))
        self.states.append(_State(weight, bias, lower, upper, kind, label_weight, metrics))
        return len(self.states) - 1

    def _go(self, target: int) -> None:
        """Make ``target`` the current state (the one left keeps only its sparse form)."""
        if target != self.cursor:
            self.states[self.cursor].release()
        self.cursor = target

    def _record(self, action: str, params: dict, summary: str, before: int, after: int, changes: list | None = None,
                seconds: float = 0.0, refit: dict | None = None) -> LogEntry:
        entry = LogEntry(len(self.log), action, params, summary, _now(), before, after, self.states[before].metrics,
                         self.states[after].metrics, changes or [], seconds, refit or {})
        self.log.append(entry)
        return entry

    def _move(self, target: int) -> None:
        self._past.append(self.cursor)
        self._future.clear()
        self._go(target)

    def apply(self, edit: Edit) -> LogEntry:
        """Apply an edit: constrain, refit every free weight, record it. Returns the log entry."""
        start_time = time.perf_counter()
        state = self.state
        lower, upper, kind, start, edited = self._constrain(edit, state)
        weight, bias, info = self.refitter.refit(start, state.bias, Constraints(lower, upper), self.support,
                                                 state.label_weight)
        changes = self._changes(state.weight, weight, lower, upper, edited)
        before = self.cursor
        self._move(self._push(weight, bias, lower, upper, kind, state.label_weight))
        return self._record("edit", edit.to_dict(), edit.describe(), before, self.cursor, changes,
                            time.perf_counter() - start_time, info)

    def up(self, concept: str, class_name: str | None = None, factor: float = DEFAULT_FACTOR,
           bounded: bool = False) -> LogEntry:
        """Up-tune ``concept`` for ``class_name`` (None: every class using it) by ``factor``."""
        return self.apply(Edit("up", concept, class_name, factor, bounded))

    def down(self, concept: str, class_name: str | None = None, factor: float = DEFAULT_FACTOR,
             bounded: bool = False) -> LogEntry:
        """Down-tune ``concept`` for ``class_name`` (None: every class using it) by ``factor``."""
        return self.apply(Edit("down", concept, class_name, factor, bounded))

    def remove(self, concept: str, class_name: str | None = None) -> LogEntry:
        """Hold the weight at 0 (for every class when ``class_name`` is None)."""
        return self.apply(Edit("remove", concept, class_name))

    def lock(self, concept: str, class_name: str | None = None) -> LogEntry:
        """Hold the weight at its current value."""
        return self.apply(Edit("lock", concept, class_name))

    def restore(self, concept: str, class_name: str | None = None) -> LogEntry:
        """Drop the constraint on the weight."""
        return self.apply(Edit("restore", concept, class_name))

    def set_label_weight(self, label_weight: float) -> LogEntry:
        """Blend the labels into the refit objective by ``label_weight`` (alpha in [0, 1]) and refit."""
        alpha = float(label_weight)
        self._check_label_weight(alpha)
        start_time = time.perf_counter()
        state = self.state
        weight, bias, info = self.refitter.refit(state.weight, state.bias, self.constraints, self.support, alpha)
        before = self.cursor
        self._move(self._push(weight, bias, state.lower, state.upper, state.kind, alpha))
        return self._record("label_weight", {"label_weight": alpha},
                            f"blend labels: alpha {state.label_weight:g} -> {alpha:g}", before, self.cursor,
                            seconds=time.perf_counter() - start_time, refit=info)

    def _check_label_weight(self, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0 or not math.isfinite(alpha):
            raise ConfigError(f"label_weight (alpha) must lie in [0, 1], not {alpha}.")
        if alpha > 0 and not self.has_labels:
            raise ConfigError("The training images have no labels among the teacher's classes, so there is "
                              "nothing to blend in: label_weight must stay 0.")

    def undo(self) -> LogEntry:
        """Go back to the state before the last action (edit, blend or jump); exact."""
        if not self._past:
            raise ConfigError("Nothing to undo.")
        before = self.cursor
        self._future.append(self.cursor)
        self._go(self._past.pop())
        return self._record("undo", {}, f"undo (back to state {self.cursor})", before, self.cursor)

    def redo(self) -> LogEntry:
        """Go forward again after an undo."""
        if not self._future:
            raise ConfigError("Nothing to redo.")
        before = self.cursor
        self._past.append(self.cursor)
        self._go(self._future.pop())
        return self._record("redo", {}, f"redo (to state {self.cursor})", before, self.cursor)

    def jump(self, step: int) -> LogEntry:
        """Return to the state right after log entry ``step`` (any earlier entry, on any branch)."""
        if not 0 <= int(step) < len(self.log):
            raise ConfigError(f"There is no step {step}; the log has steps 0 to {len(self.log) - 1}.")
        target = self.log[int(step)].state
        before = self.cursor
        self._move(target)
        return self._record("jump", {"step": int(step)}, f"jump to step {int(step)}", before, self.cursor)

    # -- provenance: export, import, replay ----------------------------------------------------------
    def export_log(self, path: str | os.PathLike | None = None) -> dict:
        """The whole log as a JSON-ready dict, with the starting student; written to ``path`` when given."""
        initial = self.initial
        data = {
            "format": LOG_FORMAT,
            "version": LOG_VERSION,
            "features": {"key": features_key(self.features), "fingerprint": self.features.fingerprint,
                         "n_images": len(self.features.is_val), "concepts": len(self.concepts),
                         "class_names": self.class_names},
            "initial": {"weight": initial.weight.tolist(), "bias": initial.bias.tolist(),
                        "score_mean": initial.score_mean.astype(float).tolist(),
                        "score_std": initial.score_std.astype(float).tolist(), "config": initial.config.to_dict()},
            "entries": [entry.to_dict() for entry in self.log],
            "final": {"state": self.cursor, "weight": self.state.weight.tolist(), "bias": self.state.bias.tolist()},
        }
        text = json.dumps(data, indent=1, allow_nan=False, default=_json_default)
        if path is not None:
            atomic_write_text(path, text)
        return json.loads(text)

    @classmethod
    def replay(cls, features: FeatureSet, log: dict | str | os.PathLike, *, eval_features: FeatureSet | None = None,
               atol: float = 1e-6, strict: bool = True) -> TuningSession:
        """Rebuild a session by replaying an exported log on the same FeatureSet: every action runs again,
        refits included. The final weights are compared with the recorded ones: the largest gap is kept in
        ``session.replay_gap``, and a gap over ``atol`` raises unless ``strict=False`` (refits on another
        machine may differ in the last float32 digits)."""
        data = _read_log(log)
        key = features_key(features)
        if data["features"]["key"] != key:
            raise ConfigError(f"This log was recorded on other features (key {data['features']['key']}, here {key}): "
                              "replay it on the FeatureSet it came from.")
        init = data["initial"]
        student = LinearStudent(np.asarray(init["weight"], dtype=np.float64), np.asarray(init["bias"], dtype=np.float64),
                                np.asarray(init["score_mean"], dtype=np.float32),
                                np.asarray(init["score_std"], dtype=np.float32), DistillConfig(**init["config"]))
        entries = data["entries"]
        session = cls(features, student, eval_features=eval_features, label_weight=entries[0]["params"]["label_weight"])
        for step, entry in enumerate(entries[1:], start=1):
            action, params = entry["action"], entry["params"]
            try:
                if action == "edit":
                    session.apply(Edit(**params))
                elif action == "label_weight":
                    session.set_label_weight(params["label_weight"])
                elif action == "undo":
                    session.undo()
                elif action == "redo":
                    session.redo()
                else:
                    session.jump(params["step"])
            except (ConfigError, ConstraintError) as err:
                raise ConfigError(f"Step {step} of the tuning log ({action}) cannot be replayed: {err}") from err
        final = np.asarray(data["final"]["weight"])
        gap = float(np.max(np.abs(session.weight - final))) if final.shape == session.weight.shape else float("inf")
        session.replay_gap = gap
        if strict and not gap <= atol:
            raise ConfigError(f"Replaying the log did not reproduce its final student: the largest weight gap is "
                              f"{gap:.3g} (allowed {atol:g}). Pass strict=False to keep the replayed session.")
        return session


def _bound(value: float) -> float | None:
    """A constraint end for the log: ``None`` where unbounded (JSON has no infinity)."""
    return float(value) if np.isfinite(value) else None


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _reject_constant(name: str) -> float:
    raise ConfigError(f"The tuning log holds {name}, which is not a number a student can have: it was edited by "
                      "hand or written by another program. Export the log again from InFiConD.")


def _read_log(log: dict | str | os.PathLike) -> dict:
    """The log as a dict, parsed (NaN / Infinity refused) and validated by :func:`validate_log`."""
    if isinstance(log, dict):
        data = log
    else:
        where = os.fspath(log)
        try:
            size = Path(where).stat().st_size
            if size > MAX_LOG_BYTES:
                raise ConfigError(f"The tuning log {where!r} is {size / 2**20:.0f} MiB; a log is at most "
                                  f"{MAX_LOG_BYTES // 2**20} MiB. Is it the right file?")
            data = json.loads(Path(where).read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"Cannot read the tuning log {where!r}: {err}") from err
        except RecursionError as err:
            raise ConfigError(f"Cannot read the tuning log {where!r}: it is nested too deeply to be a tuning log.") from err
    validate_log(data)
    return data


def _where(path: str, value: object, expected: str) -> ConfigError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ConfigError(f"The tuning log is invalid: {path} must be {expected}, not {shown}. "
                       "Export the log again from InFiConD, or fix that field.")


def _get(data: dict, key: str, path: str) -> object:
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(f"The tuning log is invalid: {path}{'.' if path else ''}{key} is missing. "
                          "Export the log again from InFiConD.")
    return data[key]


def _finite_array(value: object, path: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` whose entries are all finite numbers."""
    expected = f"an array of shape {shape} of finite numbers"
    if not isinstance(value, list):
        raise _where(path, value, expected)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RecursionError):
        raise _where(path, value, expected) from None
    if array.shape != shape:
        raise ConfigError(f"The tuning log is invalid: {path} has shape {array.shape}, the student needs {shape}.")
    if not np.isfinite(array).all():
        raise ConfigError(f"The tuning log is invalid: {path} holds a value that is not a finite number.")
    return array


def _number(value: object, path: str, low: float, high: float, *, above: bool = False) -> float:
    """A finite real number in [low, high] (or (low, high] when ``above``)."""
    span = f"in ({low:g}, {high:g}]" if above else f"in [{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value > high or value < low or (above and value == low):
        raise _where(path, value, f"a finite number {span}")
    return float(value)


def _check_params(action: str, params: object, path: str, steps: int) -> None:
    """The parameters that re-create one action (what :meth:`TuningSession.replay` reads)."""
    if not isinstance(params, dict):
        raise _where(path, params, "an object")
    if action == "edit":
        unknown = set(params) - {"action", "concept", "class_name", "factor", "bounded"}
        if unknown:
            raise _where(path, sorted(unknown), "free of unknown keys")
        if _get(params, "action", path) not in ACTIONS:
            raise _where(f"{path}.action", params["action"], f"one of {ACTIONS}")
        if not isinstance(_get(params, "concept", path), str):
            raise _where(f"{path}.concept", params["concept"], "a concept's text")
        if not isinstance(params.get("class_name"), (str, type(None))):
            raise _where(f"{path}.class_name", params["class_name"], "a class name or null")
        if params.get("factor") is not None:
            _number(params["factor"], f"{path}.factor", 1.0, 1e6, above=True)
        if not isinstance(params.get("bounded", False), bool):
            raise _where(f"{path}.bounded", params["bounded"], "true or false")
    elif action in ("label_weight", "start"):
        _number(_get(params, "label_weight", path), f"{path}.label_weight", 0.0, 1.0)
    elif action == "jump":
        step = _get(params, "step", path)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < steps:
            raise _where(f"{path}.step", step, f"a step number from 0 to {steps - 1}")


def validate_log(data: object) -> None:
    """Check an exported log's schema and every number a replay reads; raise a :class:`ConfigError` that
    names the first field that is wrong."""
    if not isinstance(data, dict) or data.get("format") != LOG_FORMAT:
        raise ConfigError("This file is not an InFiConD tuning log (its 'format' field is missing or different).")
    if data.get("version") not in READABLE_LOG_VERSIONS:
        raise ConfigError(f"Tuning log version {data.get('version')!r} is not supported (this version reads "
                          f"{', '.join(map(str, READABLE_LOG_VERSIONS))}). Update InFiConD to read it.")
    if not isinstance(_get(_get(data, "features", ""), "key", "features"), str):
        raise _where("features.key", data["features"]["key"], "a string")
    initial = _get(data, "initial", "")
    weight = _get(initial, "weight", "initial")
    rows = len(weight) if isinstance(weight, list) else 0
    cols = len(weight[0]) if rows and isinstance(weight[0], list) else 0
    if not rows or not cols:
        raise _where("initial.weight", weight, "a non-empty array of shape (classes, concepts)")
    _finite_array(weight, "initial.weight", (rows, cols))
    _finite_array(_get(initial, "bias", "initial"), "initial.bias", (rows,))
    _finite_array(_get(initial, "score_mean", "initial"), "initial.score_mean", (cols,))
    std = _finite_array(_get(initial, "score_std", "initial"), "initial.score_std", (cols,))
    if (std <= 0).any():
        raise ConfigError("The tuning log is invalid: initial.score_std must be positive.")
    config = _get(initial, "config", "initial")
    if not isinstance(config, dict) or set(config) - {f.name for f in fields(DistillConfig)}:
        raise _where("initial.config", config, "the settings of a DistillConfig")
    try:
        DistillConfig(**config)
    except (TypeError, ConfigError) as err:
        raise ConfigError(f"The tuning log is invalid: initial.config: {err}") from err
    entries = _get(data, "entries", "")
    if not isinstance(entries, list) or not entries:
        raise _where("entries", entries, "a non-empty list of actions")
    for i, entry in enumerate(entries):
        action = _get(entry, "action", f"entries[{i}]")
        if action not in LOG_ACTIONS or (action == "start") != (i == 0):
            raise _where(f"entries[{i}].action", action, "'start' first, then one of " + ", ".join(LOG_ACTIONS[1:]))
        _check_params(action, _get(entry, "params", f"entries[{i}]"), f"entries[{i}].params", i)
    final = _get(data, "final", "")
    _finite_array(_get(final, "weight", "final"), "final.weight", (rows, cols))
