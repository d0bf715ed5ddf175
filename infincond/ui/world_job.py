"""The Shapes world built in the background, so that the page is served at once: the build's progress
(stage, fraction, time left) for the page to show, and the preset once it is ready."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from ..demo import World, load_world
from .settings import LoadSettings

#: Images the app samples from the Shapes world by default (``python app.py --samples``).
SHAPES_SAMPLES = 600


def shapes_preset(world: World, samples: int = SHAPES_SAMPLES) -> LoadSettings:
    """The offline Shapes world as a preset: its dataset, teacher and encoder, its vocabulary typed in, and
    its groups: class x background (where the teacher's shortcut lies)."""
    return LoadSettings(teacher=str(world.teacher), dataset=str(world.dataset), encoder=str(world.encoder),
                        split="train", samples=samples, corpus="builtin+typed", concepts_text=", ".join(world.concepts),
                        group_column="background")


class WorldJob:
    """Loads the Shapes world, building it first when missing, in a daemon thread. ``load`` is what builds
    it (``load_world`` by default; tests pass a slow stand-in): ``load(on_progress)`` returns the World and
    calls ``on_progress(stage, fraction, seconds_left)`` while it works."""

    def __init__(self, root: str | os.PathLike | None = None, samples: int = SHAPES_SAMPLES,
                 load: Callable | None = None) -> None:
        self.samples = samples
        self.stage, self.fraction, self.seconds_left = "starting", 0.0, None
        self.world: World | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self._load = load or (lambda on_progress: load_world(root, on_progress=on_progress))
        self._thread = threading.Thread(target=self._run, name="shapes-world", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.world = self._load(self._progress)
        except Exception as error:  # noqa: BLE001 - shown on the page instead of the progress
            self.error = f"{type(error).__name__}: {error}"

    def _progress(self, stage: str, fraction: float, seconds_left: float | None) -> None:
        self.stage, self.fraction, self.seconds_left = stage, float(fraction), seconds_left

    @property
    def done(self) -> bool:
        return self.world is not None or self.error is not None

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done

    def preset(self) -> LoadSettings | None:
        """The Shapes world's preset once it is built (None before)."""
        return shapes_preset(self.world, self.samples) if self.world is not None else None

    def status(self) -> str:
        """One line for the page: the stage, the percentage and the time left, or the outcome."""
        if self.error is not None:
            return f"Building the Shapes world failed ({self.error}). Check the server log; other presets still work."
        if self.world is not None:
            return "The Shapes world is ready."
        left = "" if self.seconds_left is None else f", about {self.seconds_left:.0f} s left"
        return (f"Building the offline Shapes world (first run only): **{self.stage}**, "
                f"{100 * self.fraction:.0f}% done{left}. Load opens when it is ready.")
