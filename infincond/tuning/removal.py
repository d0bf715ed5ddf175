"""What a remove does beyond its weight: the proxies it holds at 0 with it (the concepts that track it within
classes, :mod:`infincond.proxies`), named before the edit is applied and logged so that a replay holds the
same ones, and after every refit the proxy report: the weights that rose most, and what they track."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..proxies import PROXY_CORRELATION, Tracking
from .edits import Action, Edit, Kind
from .names import Names

#: How many of the weights that rose most, per edited class, the proxy report lists.
REPORT_SIZE = 5


def resolve(edit: Edit, names: Names, tracking: Tracking) -> Edit:
    """The edit as it will be applied and logged: a remove's proxies named (found, less the released ones,
    when not given)."""
    if edit.action != Action.REMOVE.value or edit.proxies is not None:
        return edit
    released = {names.concept_id(name) for name in edit.released}
    found = [names.concepts[j] for j, _ in tracking.proxies(names.concept_id(edit.concept)) if j not in released]
    return replace(edit, proxies=tuple(found))


def proxy_report(names: Names, tracking: Tracking, before: np.ndarray, after: np.ndarray, kind: np.ndarray,
                 classes: list[int]) -> list[dict]:
    """For each of ``classes``, the :data:`REPORT_SIZE` weights whose |weight| rose most from ``before`` to
    ``after`` (C, K), each with the concept removed for that class (``kind``) it tracks, if any (within-class
    correlation at least :data:`~infincond.proxies.PROXY_CORRELATION`)."""
    out = []
    for c in dict.fromkeys(classes):
        rise = np.abs(after[c]) - np.abs(before[c])
        order = [int(j) for j in np.argsort(-rise, kind="stable")[:REPORT_SIZE] if rise[j] > 1e-9]
        tracked = {int(r): tracking.correlation(int(r)) for r in np.nonzero(kind[c] == Kind.REMOVED)[0]}
        for j in order:
            best = max(tracked, key=lambda r: tracked[r][j], default=None)
            tracks = names.concepts[best] if best is not None and tracked[best][j] >= PROXY_CORRELATION else None
            out.append({"concept": names.concepts[j], "class_name": names.class_names[c], "before": float(before[c, j]),
                        "after": float(after[c, j]), "kind": Kind(kind[c, j]).name.lower(), "tracks": tracks})
    return out
