"""The provenance log: one :class:`LogEntry` per action, exported as versioned JSON (the starting student,
every entry, the final weights) and replayed; the file format, read back and validated field by field, is
:mod:`~infincond.tuning.logformat`'s."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone

import numpy as np

from ..distill import DistillConfig
from ..errors import ConfigError, ConstraintError
from ..metrics import finite_or_none, worst_group_accuracy
from ..storage import append_durably, atomic_write, atomic_write_text, file_identity
from .edits import Action, Edit
from .logformat import LOG_FORMAT, LOG_VERSION, journal_lines, read_log


def metric_delta(before: dict | None, after: dict) -> dict:
    """after - before for the headline and per-class metrics (None where either is missing)."""
    if before is None:
        return {}

    def sub(a, b):
        return None if a is None or b is None else a - b

    out = {key: sub(after[key], before[key]) for key in ("fidelity", "accuracy", "kl", "nec")}
    out["per_class"] = {name: {key: sub(after["per_class"][name][key], before["per_class"][name][key])
                               for key in after["per_class"][name]} for name in after["per_class"]}
    out["worst_group_accuracy"] = sub(worst_group_accuracy(after), worst_group_accuracy(before))
    return out


@dataclass
class LogEntry:
    """One action of the provenance log: what was done, when, and the metrics before and after.

    ``action``: one of :data:`.logformat.LOG_ACTIONS`; ``params`` re-creates it; ``state`` / ``state_before`` index
    the session's states; ``changes`` lists the edited weights (``lower`` / ``upper`` are None where
    unbounded, so an entry is always JSON), ``held`` the proxies a remove held and ``rose`` the proxy
    report (the weights that rose most for each edited class, and the removed concept each tracks);
    ``refit`` holds the solver's iterations and seconds.
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
    held: list[dict] = field(default_factory=list)
    rose: list[dict] = field(default_factory=list)

    @property
    def delta(self) -> dict:
        """Metric changes: fidelity, accuracy, kl, nec and per class."""
        return metric_delta(self.metrics_before, self.metrics_after)

    def to_dict(self) -> dict:
        """The entry as a JSON-ready dict of its own (a deep copy)."""
        return asdict(self)

    def fields(self) -> dict:
        """The entry's fields, not copied: to serialise at once (a deep copy of its nested metrics took
        most of the time of writing an entry)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Preview:
    """The what-if of an edit: metrics before and after, the weights it changes, the proxies it holds
    (``held``) and, refitted, the weights that rose most (``rose``, the proxy report), nothing applied.
    Without a refit, the edited weights sit at the value asked for and nothing else moves."""

    edit: Edit
    refitted: bool
    metrics_before: dict
    metrics_after: dict
    changes: list[dict]
    seconds: float
    held: list[dict] = field(default_factory=list)
    rose: list[dict] = field(default_factory=list)

    @property
    def delta(self) -> dict:
        return metric_delta(self.metrics_before, self.metrics_after)


def now() -> str:
    """The time an entry records: UTC, ISO 8601, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


#: A constraint end for the log: ``None`` where unbounded (JSON has no infinity).
bound = finite_or_none


def features_key(features) -> str:
    """A hash of the rows, concepts and classes a session depends on (a replay must see the same)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([features.concepts, features.class_names]).encode())
    for array in (features.concept_scores, features.teacher_logits, features.labels, features.is_val):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def log_text(data, indent: int | None = 1) -> str:
    """The log (or a part of it) as JSON text (strict: no NaN or infinity can be written)."""
    return json.dumps(data, indent=indent, allow_nan=False, default=_json_default)


def _header(session) -> dict:
    """What a log starts with: its format, the features it was recorded on and the starting student."""
    initial = session.initial
    return {
        "format": LOG_FORMAT,
        "version": LOG_VERSION,
        "features": {"key": session.features_key, "fingerprint": session.features.fingerprint,
                     "n_images": len(session.features.is_val), "concepts": len(session.concepts),
                     "class_names": session.class_names},
        "initial": {"weight": initial.weight.tolist(), "bias": initial.bias.tolist(),
                    "score_mean": initial.score_mean.astype(float).tolist(),
                    "score_std": initial.score_std.astype(float).tolist(), "config": initial.config.to_dict()},
    }


def _final(session) -> dict:
    return {"state": session.cursor, "weight": session.state.weight.tolist(), "bias": session.state.bias.tolist()}


def export(session, path: str | os.PathLike | None = None) -> dict:
    """A session's whole log as a JSON-ready dict: the features it was recorded on (a hash of them, which a
    replay checks), the starting student, every entry, and the final weights; written to ``path``
    atomically when given."""
    data = {**_header(session), "entries": [entry.to_dict() for entry in session.log], "final": _final(session)}
    if path is not None:
        atomic_write_text(path, log_text(data))
    return data


def write_journal(session, path: str | os.PathLike, memo: dict) -> None:
    """Keep ``path`` (a ``.jsonl`` file) the session's log as a journal (read back by
    :func:`~.logformat.read_log`), written after every action: the entries added since the last call are
    appended and flushed to disk (O(one entry) per action, however long the log). The whole file is written
    again, atomically, when an entry written before changed (its metrics are replaced when the session's
    groups change), for another session (widened, imported), after a failed append, or when the file is not
    the one this memo last wrote (deleted, or written by another tab on the same session: the last writer's
    log wins, whole). ``memo``: the caller's, one per file."""
    written = memo.get("written") if memo.get("session") is session else None
    log = session.log
    fresh = written is None or len(written) > len(log) or any(
        kept[0] is not entry or kept[1] is not entry.metrics_before or kept[2] is not entry.metrics_after
        for kept, entry in zip(written, log, strict=False))
    identity = memo.get("identity")
    memo.clear()  # until this write is complete, the next one starts afresh

    def lines(entries: list, header: bool = False) -> bytes:
        return journal_lines(([log_text(_header(session), indent=None)] if header else [])
                             + [log_text(entry.fields(), indent=None) for entry in entries])

    if not fresh and len(log) > len(written):
        identity = append_durably(path, lines(log[len(written):]), identity)
        fresh = identity is None
    if fresh:
        whole = lines(log, header=True)
        atomic_write(path, lambda handle: handle.write(whole))
        identity = file_identity(path)
    memo.update(session=session, identity=identity,
                written=[(entry, entry.metrics_before, entry.metrics_after) for entry in log])


def rerun(session, entries: list, version: int = LOG_VERSION) -> None:
    """Run a log's actions again on ``session``, in order (``LogEntry`` objects or their exported dicts, the
    start entry excluded; ``version``: the log's format): what a replay does, and how a session moves onto
    wider features."""
    from .edits import Edit

    for step, entry in enumerate(entries, start=1):
        action, params = (entry.action, entry.params) if isinstance(entry, LogEntry) else (entry["action"],
                                                                                            entry["params"])
        if version < 3 and action == "edit" and params.get("action") == Action.REMOVE.value:
            params = {"proxies": [], **params}  # before version 3, a remove held no proxy
        try:
            if action == "edit":
                session.apply(Edit(**params))
            elif action == "label_weight":
                session.set_label_weight(params["label_weight"])
            elif action in ("undo", "redo"):
                getattr(session, action)()
            else:
                session.jump(params["step"])
        except (ConfigError, ConstraintError) as err:
            raise ConfigError(f"Step {step} of the tuning log ({action}) cannot be replayed: {err}") from err


def replay(session_class, features, log: dict | str | os.PathLike, *, eval_features=None, atol: float = 1e-6,
           strict: bool = True, groups=None):
    """Rebuild a session by replaying an exported log on the same FeatureSet: every action runs again,
    refits included. The final weights are compared with the recorded ones: the largest gap is kept in
    ``session.replay_gap`` (None for a journal, which records none), and a gap over ``atol`` raises unless
    ``strict=False`` (refits on another machine may differ in the last float32 digits). ``groups``: measure
    per-group accuracy on them."""
    from ..linear import LinearStudent

    data = read_log(log)
    key = features_key(features)
    if data["features"]["key"] != key:
        raise ConfigError(f"This log was recorded on other features (key {data['features']['key']}, here {key}): "
                          "replay it on the FeatureSet it came from.")
    init = data["initial"]
    student = LinearStudent(np.asarray(init["weight"], dtype=np.float64), np.asarray(init["bias"], dtype=np.float64),
                            np.asarray(init["score_mean"], dtype=np.float32),
                            np.asarray(init["score_std"], dtype=np.float32), DistillConfig.from_dict(init["config"]))
    entries = data["entries"]
    session = session_class(features, student, eval_features=eval_features,
                            label_weight=entries[0]["params"]["label_weight"], groups=groups)
    session.rerun(entries[1:], data["version"])
    if data["final"] is None:  # a journal: no final weights recorded to compare with
        return session
    final = np.asarray(data["final"]["weight"])
    gap = float(np.max(np.abs(session.weight - final))) if final.shape == session.weight.shape else float("inf")
    session.replay_gap = gap
    if strict and not gap <= atol:
        raise ConfigError(f"Replaying the log did not reproduce its final student: the largest weight gap is "
                          f"{gap:.3g} (allowed {atol:g}). Pass strict=False to keep the replayed session.")
    return session
