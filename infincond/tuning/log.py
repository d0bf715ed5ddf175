"""The provenance log: one :class:`LogEntry` per action, exported as versioned JSON (the starting student,
every entry, the final weights), read back and validated field by field, and replayed."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..checks import check_factor, check_label_weight
from ..distill import DistillConfig
from ..errors import ConfigError, ConstraintError
from ..metrics import finite_or_none, worst_group_accuracy
from ..storage import atomic_write_text
from .edits import Action, Edit

LOG_FORMAT = "infincond-tuning-log"
#: Version 2 writes unbounded constraint ends as ``null`` (version 1 could not hold them); version 3 names
#: the proxies a remove holds (a remove of versions 1 and 2 held none, and replays so). All are read.
LOG_VERSION = 3
READABLE_LOG_VERSIONS = (1, 2, 3)
#: Tuning logs larger than this are refused before they are parsed.
MAX_LOG_BYTES = 256 * 2**20
#: What a log entry can record.
LOG_ACTIONS = ("start", "edit", "label_weight", "undo", "redo", "jump")
ACTIONS = tuple(a.value for a in Action)


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

    ``action``: one of :data:`LOG_ACTIONS`; ``params`` re-creates it; ``state`` / ``state_before`` index
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
        return asdict(self)


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


def log_text(data: dict) -> str:
    """The log as JSON text (strict: no NaN or infinity can be written)."""
    return json.dumps(data, indent=1, allow_nan=False, default=_json_default)


def _reject_constant(name: str) -> float:
    raise ConfigError(f"The tuning log holds {name}, which is not a number a student can have: it was edited by "
                      "hand or written by another program. Export the log again from InFiConD.")


def read_log(log: dict | str | os.PathLike) -> dict:
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
            raise ConfigError(f"Cannot read the tuning log {where!r}: "
                              "it is nested too deeply to be a tuning log.") from err
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


def _checked(check, value: object, path: str) -> float:
    """``check(value, path)`` (a rule of :mod:`infincond.checks`), its error naming the log's field."""
    try:
        return check(value, path)
    except ConfigError as error:
        raise ConfigError(f"The tuning log is invalid: {error} Export the log again from InFiConD, or fix that "
                          "field.") from None


def _check_params(action: str, params: object, path: str, steps: int) -> None:
    """The parameters that re-create one action (what :meth:`TuningSession.replay` reads)."""
    if not isinstance(params, dict):
        raise _where(path, params, "an object")
    if action == "edit":
        unknown = set(params) - {"action", "concept", "class_name", "factor", "bounded", "proxies", "released",
                                 "label_weight"}
        if unknown:
            raise _where(path, sorted(unknown), "free of unknown keys")
        if _get(params, "action", path) not in ACTIONS:
            raise _where(f"{path}.action", params["action"], f"one of {ACTIONS}")
        if not isinstance(_get(params, "concept", path), str):
            raise _where(f"{path}.concept", params["concept"], "a concept's text")
        if not isinstance(params.get("class_name"), (str, type(None))):
            raise _where(f"{path}.class_name", params["class_name"], "a class name or null")
        if params.get("factor") is not None:
            _checked(check_factor, params["factor"], f"{path}.factor")
        if not isinstance(params.get("bounded", False), bool):
            raise _where(f"{path}.bounded", params["bounded"], "true or false")
        for key in ("proxies", "released"):
            value = params.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise _where(f"{path}.{key}", value, "a list of concepts" + (" or null" if key == "proxies" else ""))
        if params.get("label_weight") is not None:
            _checked(check_label_weight, params["label_weight"], f"{path}.label_weight")
    elif action in ("label_weight", "start"):
        _checked(check_label_weight, _get(params, "label_weight", path), f"{path}.label_weight")
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
    if not isinstance(config, dict):
        raise _where("initial.config", config, "the settings of a DistillConfig")
    try:
        DistillConfig.from_dict(config)
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


def export_text(session, memo: dict) -> str:
    """The JSON text of :func:`export` (compact), for a log written after every action: the header and
    each entry are serialised once and kept in ``memo`` (the caller's, one per session) while unchanged
    (an entry's metrics are replaced when the session's groups change)."""
    def dumps(value) -> str:
        return json.dumps(value, allow_nan=False, default=_json_default)

    if memo.get("session") is not session:  # another session (widened, imported): nothing kept applies
        memo.clear()
        memo["session"] = session
        memo["header"] = dumps(_header(session))[:-1]  # without its closing brace
    entries = []
    for entry in session.log:
        kept = memo.get(entry.step)
        if kept is None or kept[0] is not entry or kept[1] is not entry.metrics_before \
                or kept[2] is not entry.metrics_after:
            kept = memo[entry.step] = (entry, entry.metrics_before, entry.metrics_after, dumps(entry.to_dict()))
        entries.append(kept[3])
    return f'{memo["header"]}, "entries": [{", ".join(entries)}], "final": {dumps(_final(session))}}}'


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
    ``session.replay_gap``, and a gap over ``atol`` raises unless ``strict=False`` (refits on another
    machine may differ in the last float32 digits). ``groups``: measure per-group accuracy on them."""
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
    final = np.asarray(data["final"]["weight"])
    gap = float(np.max(np.abs(session.weight - final))) if final.shape == session.weight.shape else float("inf")
    session.replay_gap = gap
    if strict and not gap <= atol:
        raise ConfigError(f"Replaying the log did not reproduce its final student: the largest weight gap is "
                          f"{gap:.3g} (allowed {atol:g}). Pass strict=False to keep the replayed session.")
    return session
