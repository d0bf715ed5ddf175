"""TuningSession: edits become constraints, the student refits under them, and every action lands in the
provenance log, which can be undone, exported, imported and replayed (see :mod:`.edits` for what each
edit means). After each edit every free weight of the student's support refits to the distillation
objective, in which the labels can be blended with the teacher (``label_weight``, alpha)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..checks import check_label_weight
from ..distill import Constraints, Refitter
from ..errors import ConfigError
from ..groups import Groups
from ..linear import LinearStudent
from ..metrics import Evaluator, Metrics
from ..proxies import Tracking, class_of_rows
from .edits import DEFAULT_FACTOR, Action, Constrained, Edit, Kind, constrain
from .history import History, State
from .log import LOG_VERSION, LogEntry, Preview, bound, export, features_key, now, replay, rerun
from .names import Names
from .removal import proxy_report, resolve


class TuningSession:
    """Edits, refits and provenance over one distilled student and the FeatureSet it was fitted on.

    Refits use the FeatureSet's training rows; metrics use its validation rows, or every row of
    ``eval_features`` (the same concepts and classes, e.g. a held-out test split) when given, with
    per-group accuracies when ``groups`` (of every row of that FeatureSet) are given.
    """

    def __init__(self, features, student: LinearStudent, *, eval_features=None,
                 label_weight: float | None = None, groups: Groups | None = None) -> None:
        c, k = features.num_classes, features.num_concepts
        if student.weight.shape != (c, k):
            raise ConfigError(f"The student has weights {student.weight.shape}; the features need ({c}, {k}).")
        if eval_features is not None and (eval_features.concepts != features.concepts
                                          or eval_features.class_names != features.class_names):
            raise ConfigError("eval_features must have the same concepts and classes as the features.")
        train = ~features.is_val
        if not train.any():
            raise ConfigError("The features have no training rows (every row is marked validation): "
                              "nothing to refit on.")
        self.features, self.eval_features = features, eval_features
        self.names = Names(features.concepts, features.class_names)
        self.concepts, self.class_names = self.names.concepts, self.names.class_names
        self.initial = student.copy(info={})
        self.support = self.initial.weight != 0
        self.has_labels = bool((features.labels_as_classes[train] >= 0).any())
        self.refitter = Refitter.for_student(features.concept_scores[train], features.teacher_logits[train],
                                             self.initial, features.labels_as_classes[train])
        rows = np.ones(len(eval_features.is_val), dtype=bool) if eval_features is not None else (
            features.is_val if features.is_val.any() else np.ones_like(features.is_val))
        self.groups = groups
        self.evaluator = Evaluator(eval_features if eval_features is not None else features, rows, self.initial,
                                   groups)
        alpha = student.config.label_weight if label_weight is None else label_weight
        self._check_label_weight(alpha)
        first = State(self.initial.weight, self.initial.bias, Constraints.free(c, k), np.zeros((c, k), dtype=np.int8),
                      alpha, self._metrics(self.initial.weight, self.initial.bias))
        self.history = History(first)
        self.replay_gap: float | None = None  # set by replay()
        self.log: list[LogEntry] = [LogEntry(0, "start", {"label_weight": float(alpha)}, "distilled student", now(),
                                             None, 0, None, first.metrics)]

    # -- reading -------------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.history.current

    @property
    def states(self) -> list[State]:
        return self.history.states

    @property
    def cursor(self) -> int:
        return self.history.cursor

    @property
    def weight(self) -> np.ndarray:
        """Current weights (C, K), read-only."""
        return self.state.weight

    @property
    def label_weight(self) -> float:
        return self.state.label_weight

    @property
    def constraints(self) -> Constraints:
        return self.state.constraints

    @property
    def student(self) -> LinearStudent:
        """The current student as a :class:`LinearStudent` (a copy; ``weight_std`` is the bootstrap spread
        of the distilled weights, when it was fitted with an ensemble)."""
        return self.initial.copy(weight=self.state.weight.copy(), bias=self.state.bias.copy(),
                                 config=replace(self.initial.config, label_weight=self.label_weight),
                                 info={"tuning_steps": len(self.log) - 1})

    @property
    def metrics(self) -> dict:
        """The current state's metrics (:meth:`Metrics.to_dict`)."""
        return self.state.metrics

    def evaluate(self) -> Metrics:
        """Full metrics of the current student on the evaluation rows."""
        return self.evaluator.metrics(self.state.weight, self.state.bias)

    def _metrics(self, weight: np.ndarray, bias: np.ndarray) -> dict:
        return self.evaluator.metrics(weight, bias).to_dict()

    def set_groups(self, groups: Groups | None) -> None:
        """Measure per-group accuracy on these ``groups`` (of every evaluation row; None: no groups) from now
        on, and again for every state and log entry so far (metrics are derived from the states)."""
        self.groups, self.evaluator.groups = groups, None if groups is None else groups.subset(self.evaluator.rows)
        for i, state in enumerate(self.states):
            state.metrics = self._metrics(state.weight, state.bias)
            if i != self.cursor:
                state.release()
        for entry in self.log:
            entry.metrics_before = None if entry.state_before is None else self.states[entry.state_before].metrics
            entry.metrics_after = self.states[entry.state].metrics

    @property
    def can_undo(self) -> bool:
        return bool(self.history.past)

    @property
    def can_redo(self) -> bool:
        return bool(self.history.future)

    def checkpoint(self) -> tuple:
        """A mark of the whole history (states, cursor, undo / redo stacks, log) to :meth:`rollback` to."""
        return self.history.checkpoint(), len(self.log), self.replay_gap

    def rollback(self, mark: tuple) -> None:
        """Return to a :meth:`checkpoint`: everything done since is forgotten (what a failed app event needs)."""
        history, n_log, self.replay_gap = mark
        self.history.rollback(history)
        del self.log[n_log:]

    def concept_id(self, concept: str) -> int:
        return self.names.concept_id(concept)

    def class_id(self, class_name: str) -> int:
        return self.names.class_id(class_name)

    def constraint(self, concept: str, class_name: str) -> dict:
        """The constraint on one weight: kind ("free", "up", "down", "removed", "locked", "held"), bounds, weight."""
        return self.state.describe(self.class_id(class_name), self.concept_id(concept))

    def edits(self) -> list[dict]:
        """Every constrained weight of the current state, as dicts (concept, class, kind, bounds, weight)."""
        return [{"concept": self.concepts[k], "class_name": self.class_names[c], **self.state.describe(c, k)}
                for c, k in np.argwhere(self.state.kind != Kind.FREE)]

    # -- edits ---------------------------------------------------------------------------------------
    @functools.cached_property
    def tracking(self) -> Tracking:
        """Which concepts track which within classes, on the training rows (:mod:`infincond.proxies`)."""
        train = ~self.features.is_val
        return Tracking(self.refitter.x.numpy(), class_of_rows(self.features.labels_as_classes[train],
                                                               self.features.teacher_logits[train]))

    def proxies(self, concept: str) -> list[tuple[str, float]]:
        """The concepts that track ``concept`` within classes (what removing it holds), most correlated
        first, with their correlation."""
        return [(self.concepts[j], r) for j, r in self.tracking.proxies(self.concept_id(concept))]

    def _constrain(self, edit: Edit) -> Constrained:
        k = self.concept_id(edit.concept)
        class_id = None if edit.class_name is None else self.class_id(edit.class_name)
        s = self.state
        proxies = [self.concept_id(name) for name in edit.proxies or ()]
        return constrain(edit, k, class_id, s.weight, s.constraints, s.kind, self.support,
                         (self.concepts[k], self.class_names), proxies)

    def _alpha(self, edit: Edit) -> float:
        """The label blend an edit refits with (a remove may set its own: "fix with labels")."""
        if edit.label_weight is None:
            return self.label_weight
        self._check_label_weight(edit.label_weight)
        return float(edit.label_weight)

    def _refit(self, start: np.ndarray, constraints: Constraints, label_weight: float):
        """Refit every weight of the distilled support, and every constrained one, from ``start``. Whether
        the solver converged is recorded in the entry's ``refit`` info (and shown), not warned about."""
        return self.refitter.refit(start, self.state.bias, constraints, self.support | constraints.bounded,
                                   label_weight, warn=False)

    def _changes(self, after: np.ndarray, constrained: Constrained,
                 pairs: list[tuple[int, int]] | None = None) -> list[dict]:
        """The edited weights (or ``pairs``), JSON-safe: an unbounded end of a constraint is ``None``."""
        before, (lower, upper) = self.state.weight, (constrained.constraints.lower, constrained.constraints.upper)
        return [{"concept": self.concepts[k], "class_name": self.class_names[c], "before": float(before[c, k]),
                 "after": float(after[c, k]), "lower": bound(lower[c, k]), "upper": bound(upper[c, k])}
                for c, k in (constrained.edited if pairs is None else pairs)]

    def _held(self, edit: Edit, after: np.ndarray, constrained: Constrained) -> list[dict]:
        """The proxies a remove holds, each with its weight before and after, its bounds, and what it tracks."""
        return [{**change, "tracks": edit.concept} for change in self._changes(after, constrained, constrained.held)]

    def _outcome(self, edit: Edit, refit: bool = True) -> tuple:
        """What ``edit`` gives: the edit resolved (a remove's proxies named), its label blend and constraints, the
        weights (refitted, or the edited ones moved alone), bias, solver's info and :func:`.removal.proxy_report`."""
        edit = resolve(edit, self.names, self.tracking)
        alpha, constrained = self._alpha(edit), self._constrain(edit)
        if not refit:
            return edit, alpha, constrained, constrained.start, self.state.bias, {}, []
        weight, bias, info = self._refit(constrained.start, constrained.constraints, alpha)
        rose = proxy_report(self.names, self.tracking, self.state.weight, weight, constrained.kind,
                            [c for c, _ in constrained.edited])
        return edit, alpha, constrained, weight, bias, info, rose

    def preview(self, edit: Edit, refit: bool = False) -> Preview:
        """What ``edit`` would do, without applying it. ``refit=False`` (fast, what a slider needs) moves
        only the edited weights to the value asked for (the far end of a bounded interval);
        ``refit=True`` runs the constrained refit too, and reports the weights that rose most."""
        start_time = time.perf_counter()
        edit, _, constrained, weight, bias, _, rose = self._outcome(edit, refit)
        return Preview(edit, refit, self.metrics, self._metrics(weight, bias), self._changes(weight, constrained),
                       time.perf_counter() - start_time, self._held(edit, weight, constrained), rose)

    def _record(self, action: str, params: dict, summary: str, before: int, changes: list | None = None,
                seconds: float = 0.0, refit: dict | None = None, held: list | None = None,
                rose: list | None = None) -> LogEntry:
        entry = LogEntry(len(self.log), action, params, summary, now(), before, self.cursor,
                         self.states[before].metrics, self.state.metrics, changes or [], seconds, refit or {},
                         held or [], rose or [])
        self.log.append(entry)
        return entry

    def _advance(self, weight, bias, constraints: Constraints, kind: np.ndarray, label_weight: float) -> int:
        """Store the new state and make it current; returns the state left."""
        before = self.cursor
        state = State(weight, bias, constraints, kind, label_weight, self._metrics(weight, bias))
        self.history.move(self.history.add(state))
        return before

    def apply(self, edit: Edit) -> LogEntry:
        """Apply an edit: constrain (a remove holds its proxies at 0), refit every free weight, record it with
        the proxy report. Returns the log entry."""
        start_time = time.perf_counter()
        edit, alpha, constrained, weight, bias, info, rose = self._outcome(edit)
        changes, held = self._changes(weight, constrained), self._held(edit, weight, constrained)
        before = self._advance(weight, bias, constrained.constraints, constrained.kind, alpha)
        return self._record("edit", edit.to_dict(), edit.describe(), before, changes, time.perf_counter() - start_time,
                            info, held, rose)

    def up(self, concept: str, class_name: str | None = None, factor: float = DEFAULT_FACTOR,
           bounded: bool = False) -> LogEntry:
        """Up-tune ``concept`` for ``class_name`` (None: every class using it) by ``factor``."""
        return self.apply(Edit(Action.UP, concept, class_name, factor, bounded))

    def down(self, concept: str, class_name: str | None = None, factor: float = DEFAULT_FACTOR,
             bounded: bool = False) -> LogEntry:
        """Down-tune ``concept`` for ``class_name`` (None: every class using it) by ``factor``."""
        return self.apply(Edit(Action.DOWN, concept, class_name, factor, bounded))

    def remove(self, concept: str, class_name: str | None = None, *, proxies: Sequence[str] | None = None,
               released: Sequence[str] = (), label_weight: float | None = None) -> LogEntry:
        """Hold the weight at 0 (for every class when ``class_name`` is None), and its proxies with it
        (found within classes unless ``proxies`` names them, less ``released``); ``label_weight`` blends
        the labels into this refit ("fix with labels")."""
        return self.apply(Edit(Action.REMOVE, concept, class_name, proxies=None if proxies is None else tuple(proxies),
                               released=tuple(released), label_weight=label_weight))

    def lock(self, concept: str, class_name: str | None = None) -> LogEntry:
        """Hold the weight at its current value."""
        return self.apply(Edit(Action.LOCK, concept, class_name))

    def restore(self, concept: str, class_name: str | None = None) -> LogEntry:
        """Drop the constraint on the weight."""
        return self.apply(Edit(Action.RESTORE, concept, class_name))

    def set_label_weight(self, label_weight: float) -> LogEntry:
        """Blend the labels into the refit objective by ``label_weight`` (alpha in [0, 1]) and refit."""
        self._check_label_weight(label_weight)
        alpha, start_time, state = float(label_weight), time.perf_counter(), self.state
        weight, bias, info = self._refit(state.weight, state.constraints, alpha)
        before = self._advance(weight, bias, state.constraints, state.kind, alpha)
        return self._record("label_weight", {"label_weight": alpha},
                            f"blend labels: alpha {state.label_weight:g} -> {alpha:g}", before,
                            seconds=time.perf_counter() - start_time, refit=info)

    def _check_label_weight(self, alpha: float) -> None:
        if check_label_weight(alpha) > 0 and not self.has_labels:
            raise ConfigError("The training images have no labels among the teacher's classes, so there is "
                              "nothing to blend in: label_weight must stay 0.")

    def undo(self) -> LogEntry:
        """Go back to the state before the last action (edit, blend or jump); exact."""
        before = self.cursor
        self.history.undo()
        return self._record("undo", {}, f"undo (back to state {self.cursor})", before)

    def redo(self) -> LogEntry:
        """Go forward again after an undo."""
        before = self.cursor
        self.history.redo()
        return self._record("redo", {}, f"redo (to state {self.cursor})", before)

    def jump(self, step: int) -> LogEntry:
        """Return to the state right after log entry ``step`` (any earlier entry, on any branch)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < len(self.log):
            raise ConfigError(f"There is no step {step}; the log has steps 0 to {len(self.log) - 1}.")
        before = self.cursor
        self.history.move(self.log[int(step)].state)
        return self._record("jump", {"step": int(step)}, f"jump to step {int(step)}", before)

    # -- provenance: export, import, replay ----------------------------------------------------------
    @functools.cached_property
    def features_key(self) -> str:
        """The hash of the features that a log records and a replay checks (once: they never change)."""
        return features_key(self.features)

    def export_log(self, path: str | os.PathLike | None = None) -> dict:
        """The whole log as a JSON-ready dict, with the starting student; written to ``path`` (atomically)
        when given. See :func:`infincond.tuning.log.export`."""
        return export(self, path)

    def rerun(self, entries: list, version: int = LOG_VERSION) -> None:
        """Run a log's actions again, in order (the start entry excluded): see :func:`~.log.rerun`."""
        rerun(self, entries, version)

    def widen(self, features) -> TuningSession:
        """This session on ``features`` with more concepts (the same ones first, then new ones): the student
        gets weight 0 on the new concepts and every action of the log runs again, so the weights are the same
        and the new concepts are ready to be edited."""
        k = self.features.num_concepts
        if features.concepts[:k] != self.concepts or features.class_names != self.class_names:
            raise ConfigError("The wider features must start with this session's concepts and have its classes.")
        wider = TuningSession(features, self.initial.widened_to(features.concept_scores[~features.is_val]),
                              label_weight=self.log[0].params["label_weight"],
                              groups=self.groups if self.eval_features is None else None)
        wider.rerun(self.log[1:])
        return wider

    @classmethod
    def replay(cls, features, log: dict | str | os.PathLike, *, eval_features=None, atol: float = 1e-6,
               strict: bool = True, groups: Groups | None = None) -> TuningSession:
        """Rebuild a session by replaying an exported log on the same FeatureSet (see
        :func:`infincond.tuning.log.replay`)."""
        return replay(cls, features, log, eval_features=eval_features, atol=atol, strict=strict, groups=groups)
