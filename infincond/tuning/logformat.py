"""The tuning log's file format: its version, read from JSON and validated field by field (every number a
replay reads), each error naming the field that is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..checks import check_factor, check_label_weight
from ..distill import DistillConfig
from ..errors import ConfigError
from .edits import Action

LOG_FORMAT = "infincond-tuning-log"
#: Version 2 writes unbounded constraint ends as ``null`` (version 1 could not hold them); version 3 names
#: the proxies a remove holds (a remove of versions 1 and 2 held none, and replays so). All are read.
LOG_VERSION = 3
READABLE_LOG_VERSIONS = (1, 2, 3)
#: Tuning logs larger than this are refused before they are parsed.
MAX_LOG_BYTES = 256 * 2**20
#: A log written as a journal (the autosave's): a header line, then one entry per line, appended as they come.
JOURNAL_SUFFIX = ".jsonl"
#: What a log entry can record.
LOG_ACTIONS = ("start", "edit", "label_weight", "undo", "redo", "jump")
ACTIONS = tuple(a.value for a in Action)


def _reject_constant(name: str) -> float:
    raise ConfigError(f"The tuning log holds {name}, which is not a number a student can have: it was edited by "
                      "hand or written by another program. Export the log again from InFiConD.")


def read_log(log: dict | str | os.PathLike) -> dict:
    """The log as a dict, parsed (NaN / Infinity refused) and validated by :func:`validate_log`. A path
    ending in ``.jsonl`` is a journal (:func:`journal_lines`): read as the export it records, its final
    weights None."""
    journal = False
    if isinstance(log, dict):
        data = log
    else:
        where = os.fspath(log)
        try:
            size = Path(where).stat().st_size
            if size > MAX_LOG_BYTES:
                raise ConfigError(f"The tuning log {where!r} is {size / 2**20:.0f} MiB; a log is at most "
                                  f"{MAX_LOG_BYTES // 2**20} MiB. Is it the right file?")
            text = Path(where).read_text(encoding="utf-8")
            journal = where.lower().endswith(JOURNAL_SUFFIX)
            data = _from_journal(text) if journal else _parse(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"Cannot read the tuning log {where!r}: {err}") from err
        except RecursionError as err:
            raise ConfigError(f"Cannot read the tuning log {where!r}: "
                              "it is nested too deeply to be a tuning log.") from err
    validate_log(data, journal=journal)
    return data


def _parse(text: str):
    return json.loads(text, parse_constant=_reject_constant)


def journal_lines(parts: list) -> bytes:
    """Lines of a journal: the log's header first, then one entry per line; each line ends with a newline,
    so a line cut short by a crash mid-append is the last one and has none."""
    return b"".join(part.encode("utf-8") + b"\n" for part in parts)


def _from_journal(text: str) -> dict:
    """A journal's header and entries as an export whose ``final`` is None (a journal does not record the
    final weights); a last line cut short is dropped (the action being written when the process died)."""
    lines = text.split("\n")[:-1]  # what follows the last newline: "" or a line cut short
    if not lines:
        raise ConfigError("The tuning log is empty (a journal whose first line was never completed): import "
                          "another one, or an exported log (.json).")
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(_parse(line))
        except json.JSONDecodeError as err:
            raise ConfigError(f"The tuning log's line {number} is not JSON ({err}): import the journal as "
                              "InFiConD wrote it, or an exported log (.json).") from err
    if not isinstance(parsed[0], dict):
        raise ConfigError("This file is not an InFiConD tuning log (its first line is not a log's header).")
    return {**parsed[0], "entries": parsed[1:], "final": None}


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


def validate_log(data: object, *, journal: bool = False) -> None:
    """Check an exported log's schema and every number a replay reads; raise a :class:`ConfigError` that
    names the first field that is wrong. ``journal``: read from a journal, whose final weights are None."""
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
    if not (journal and final is None):  # a journal does not record them
        _finite_array(_get(final, "weight", "final"), "final.weight", (rows, cols))
