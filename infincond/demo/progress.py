"""A world build's progress across its threads: the stages, their weights, and the tracker that turns
each stage's reports into one never-decreasing fraction for a page and a terminal bar."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from .dual_encoder import STAGES as ENCODER_STAGES

#: The stages of a build, as ``build_world``'s ``on_progress`` names them. The dataset and the teacher
#: are made beside the dual encoder (its scenes, image tower, pool embeddings and text tower, in order),
#: so their reports interleave; "saving" is last.
BUILD_STAGES = (*ENCODER_STAGES, "dataset", "teacher", "saving")

#: ``on_progress(stage, fraction, seconds_left)``: the stage that advanced, the whole build's fraction
#: done (0 to 1, never decreasing, 1.0 exactly once, when the world is in place) and an estimate of the
#: seconds left (None until there is enough to go on).
ProgressCallback = Callable[[str, float, "float | None"], None]


class Aborted(Exception):
    """Raised in one thread of a build when another one failed."""


class BuildProgress:
    """The build's progress across its threads: each stage's share done, weighted by its cost, reported to
    the callback at most every ``interval`` seconds (and whenever a stage starts or ends), and to a
    terminal bar."""

    def __init__(self, costs: dict[str, float], callback: ProgressCallback | None, bar, interval: float = 0.5):
        self.costs, self.total = costs, sum(costs.values())
        self.callback, self.bar, self.interval = callback, bar, interval
        self.done = dict.fromkeys(costs, 0.0)
        self.spans: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.last_emit, self.fraction = -math.inf, 0.0
        self.failed = False

    def update(self, stage: str, done: float, total: float) -> None:
        with self.lock:
            if self.failed:
                raise Aborted
            share = min(1.0, done / total) if total else 1.0
            now = time.perf_counter() - self.start
            first = stage not in self.spans
            self.spans.setdefault(stage, [now, now])[1] = now
            ends = share >= 1.0 > self.done[stage]
            self.done[stage] = max(self.done[stage], share)
            fraction = sum(self.costs[k] * v for k, v in self.done.items()) / self.total
            if stage == BUILD_STAGES[-1] and share >= 1.0:
                fraction = 1.0
            else:
                fraction = min(fraction, 0.999)  # 1.0 only once the world is in place
            if first or ends or fraction == 1.0 or now - self.last_emit >= self.interval:
                self._emit(stage, max(fraction, self.fraction), now)

    def _emit(self, stage: str, fraction: float, now: float) -> None:
        self.last_emit, self.fraction = now, fraction
        if fraction >= 1.0:
            left = 0.0
        elif fraction < 0.02 or now < 2.0:
            left = None
        else:
            left = now * (1.0 - fraction) / fraction
        if self.bar is not None:
            self.bar.n = round(100 * fraction, 1)
            self.bar.set_postfix_str(stage, refresh=True)
        if self.callback is not None:
            try:
                self.callback(stage, fraction, left)
            except BaseException:
                self.failed = True
                raise

    def reporter(self, stage: str) -> Callable[[int, int], None]:
        return lambda done, total: self.update(stage, done, total)

    def abort(self) -> None:
        with self.lock:
            self.failed = True

    def seconds(self) -> dict[str, float]:
        return {stage: round(end - start, 1) for stage, (start, end) in self.spans.items()}
