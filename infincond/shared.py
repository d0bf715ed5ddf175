"""One process-wide cache of what many sessions read and nobody changes: teachers and encoders (keyed by
repo id or path, the revision asked for, a local folder's content stamp and the device), sampled datasets,
FeatureSets (keyed by their fingerprint) and the students of a sparsity sweep. Bounded (least recently
used entries go first), thread-safe (concurrent sessions asking for the same thing wait for one load), and
read-only by contract: arrays handed out are marked unwritable; a session keeps its own tuning state only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

#: How many entries of each kind stay cached (a teacher and an encoder per preset, a few feature sets).
LIMITS = {"teacher": 4, "encoder": 4, "source": 8, "features": 6, "sweep": 12, "derived": 12}


def freeze(*arrays: np.ndarray | None) -> None:
    """Mark arrays read-only (memory-mapped ones already are)."""
    for array in arrays:
        if isinstance(array, np.ndarray) and array.flags.writeable:
            array.setflags(write=False)


class SharedCache:
    """A bounded LRU per kind of entry; ``get(kind, key, load)`` loads at most once per key at a time."""

    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = dict(LIMITS, **(limits or {}))
        self._entries: dict[str, OrderedDict[Hashable, Any]] = {kind: OrderedDict() for kind in self.limits}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, Hashable], threading.Lock] = {}
        self.loads: dict[str, int] = dict.fromkeys(self.limits, 0)  # how many loads actually ran, per kind

    def get(self, kind: str, key: Hashable, load: Callable[[], Any]) -> Any:
        """The entry for ``key``, loaded with ``load()`` when missing (others asking meanwhile wait)."""
        entries = self._entries[kind]
        with self._lock:
            if key in entries:
                entries.move_to_end(key)
                return entries[key]
            loading = self._loading.setdefault((kind, key), threading.Lock())
        with loading:
            with self._lock:
                if key in entries:
                    entries.move_to_end(key)
                    return entries[key]
            value = load()
            with self._lock:
                entries[key] = value
                self.loads[kind] += 1
                while len(entries) > self.limits[kind]:
                    entries.popitem(last=False)
                self._loading.pop((kind, key), None)
        return value

    def clear(self) -> None:
        with self._lock:
            for entries in self._entries.values():
                entries.clear()
            self.loads = dict.fromkeys(self.limits, 0)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())


#: The cache the app's sessions share.
SHARED = SharedCache()
