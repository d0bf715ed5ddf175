"""One user's workspace: what was loaded, the students of the sparsity sweep, the tuning session and the
current selection. It only calls the core; one instance lives in each browser session's ``gr.State``,
so two sessions never share a student."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..analysis import (
    SweepPoint,
    concept_influence,
    disagreement_subsets,
    images_with_concept,
    nec_sweep,
    top_concepts,
)
from ..checks import check_choice, check_integer, check_number
from ..concepts.corpus import ConceptCorpus
from ..concepts.encoder import ConceptEncoder
from ..data import DataConfig, ImageSource
from ..distill import DistillConfig
from ..errors import ConfigError
from ..features import FeatureSet
from ..hub import check_repo_id
from ..pipeline import extract_concepts, load_inputs
from ..student import ConceptStudent
from ..teacher import Teacher
from ..tuning import Action, Edit, LogEntry, Preview, TuningSession

DEFAULT_SWEEP = (1, 2, 3, 5, 10, 20)
MAX_NEC = 200
CORPUS_CHOICES = ("builtin", "builtin+typed", "typed")
CONCEPT_IMAGES = 12  # images in the concept gallery


@dataclass
class LoadSettings:
    """What to load: repo ids or paths, dataset settings, the concept corpus and the sample size.

    ``corpus``: "builtin", "typed" (``concepts_text`` only) or "builtin+typed"; ``corpus_file`` (one
    concept per line) replaces the built-in corpus when given.
    """

    teacher: str
    dataset: str
    encoder: str
    config_name: str | None = None
    split: str | None = None
    image_column: str = "auto"
    label_column: str = "auto"
    samples: int = DataConfig.samples
    corpus: str = "builtin+typed"
    concepts_text: str = ""
    corpus_file: str | None = None

    def __post_init__(self) -> None:
        check_choice("corpus", self.corpus, CORPUS_CHOICES)
        self.samples = check_integer("sample size", self.samples, 2)

    def corpus_value(self) -> ConceptCorpus:
        typed = [c.strip() for line in self.concepts_text.splitlines() for c in line.split(",") if c.strip()]
        if self.corpus_file:
            base = ConceptCorpus.from_file(self.corpus_file)
        elif self.corpus in ("builtin", "builtin+typed"):
            base = ConceptCorpus.builtin()
        else:
            base = None
        if self.corpus == "builtin":
            typed = []
        if base is None:
            if not typed:
                raise ConfigError("Type at least one concept (comma- or line-separated), or use the built-in corpus.")
            return ConceptCorpus.from_list(typed)
        return base + typed if typed else base


@dataclass
class Workspace:
    """A user's state across the six views.

    Each student of the sweep keeps its own tuning session: ``sessions`` is keyed by (features fingerprint,
    NEC target), so picking another student and coming back, or loading other data and loading this data
    again, finds the session as it was, log and all. A session with edits is never dropped.
    """

    settings: LoadSettings | None = None
    source: ImageSource | None = None
    teacher: Teacher | None = None
    encoder: ConceptEncoder | None = None
    features: FeatureSet | None = None
    sweep: list[SweepPoint] = field(default_factory=list)
    sessions: dict[tuple[str, int], TuningSession] = field(default_factory=dict)
    nec: int | None = None  # the NEC target of the student being tuned
    concept: int | None = None
    class_id: int | None = None
    image: int | None = None  # a FeatureSet position
    subset: np.ndarray | None = None  # positions of the opened disagreement subset
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def session(self) -> TuningSession | None:
        """The tuning session of the student being tuned (None before a student is picked)."""
        if self.features is None or self.nec is None:
            return None
        return self.sessions.get((self.features.fingerprint, self.nec))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Workspace]:
        """Run one event: if it fails, the workspace and every tuning session are left exactly as they were."""
        saved, sessions = dict(vars(self)), dict(self.sessions)
        marks = {key: session.checkpoint() for key, session in sessions.items()}
        try:
            yield self
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            self.sessions = sessions
            for key, mark in marks.items():
                sessions[key].rollback(mark)
            raise

    # -- loading and distillation ---------------------------------------------------------------------
    def load(self, settings: LoadSettings, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> None:
        """Load the teacher, dataset and encoder and extract concept scores (cached). Tuning sessions with
        edits are kept (they come back when the same data is loaded again); the others are dropped."""
        data = DataConfig(settings.dataset, config_name=settings.config_name or None, split=settings.split or None,
                          image_column=settings.image_column, label_column=settings.label_column,
                          samples=settings.samples)
        inputs = load_inputs(settings.teacher, data, settings.encoder, settings.corpus_value(), progress=progress)
        features = extract_concepts(inputs, cache_dir, progress)
        self.settings, self.source, self.teacher, self.encoder = settings, inputs.source, inputs.teacher, inputs.encoder
        self.features = features
        self.sessions = {key: s for key, s in self.sessions.items() if len(s.log) > 1 or key[0] == features.fingerprint}
        self.sweep, self.nec = [], None
        self.concept, self.class_id, self.image, self.subset = None, None, None, None

    def distill(self, nec: int, necs: tuple[int, ...] = DEFAULT_SWEEP, progress: bool = True) -> None:
        """Fit students at several NEC targets (``nec`` among them) and tune the one at ``nec`` (its session
        is kept if it already has one)."""
        self.require("features")
        nec = check_integer("NEC (concepts per class)", nec, 1, MAX_NEC)
        self.sweep = nec_sweep(self.features, tuple(necs) + (nec,), DistillConfig(), progress=progress)
        self.pick(nec)

    def pick(self, nec: int) -> None:
        """Tune the sweep's student at this NEC target: its own session, started the first time."""
        self.require("sweep")
        nec = check_integer("NEC (concepts per class)", nec, 1, MAX_NEC)
        point = next((p for p in self.sweep if p.nec_target == nec), None)
        if point is None:
            raise ConfigError(f"No student at NEC {nec}; the sweep has {[p.nec_target for p in self.sweep]}.")
        key = (self.features.fingerprint, nec)
        if key not in self.sessions:
            self.sessions[key] = TuningSession(self.features, point.student)
        self.nec, self.image, self.subset = nec, None, None
        if self.concept is None or self.class_id is None:
            self.select_strongest()

    def require(self, what: str) -> None:
        """Raise a clear error when a step is missing."""
        missing = {"features": self.features is None, "sweep": not self.sweep, "session": self.session is None,
                   "selection": self.concept is None or self.class_id is None}[what]
        if missing:
            message = {"features": "Load a teacher and a dataset first.", "sweep": "Distil a student first.",
                       "session": "Distil a student first.",
                       "selection": "Select a concept and a class first (click a cell of the heatmap)."}[what]
            raise ConfigError(message)

    # -- selection ------------------------------------------------------------------------------------
    def influence(self) -> np.ndarray:
        self.require("session")
        return concept_influence(self.features, self.session.student)

    def select_strongest(self) -> None:
        """Select the (concept, class) with the largest |influence|."""
        influence = self.influence()
        c, k = np.unravel_index(int(np.argmax(np.abs(influence))), influence.shape)
        self.concept, self.class_id = int(k), int(c)

    def select(self, concept: str, class_name: str) -> None:
        """Select a (concept, class) by name; an unknown name changes nothing."""
        self.require("session")
        concept_id, class_id = self.session.concept_id(concept), self.session.class_id(class_name)
        self.concept, self.class_id = concept_id, class_id

    def heatmap_order(self, n: int, sort: str = "any class") -> list[int]:
        """The concepts (indices) of the heatmap's rows: the ``n`` most influential on any class, or on the
        selected class, with the selected concept always among them."""
        class_id = self.class_id if sort == "selected class" else None
        order = [int(k) for k in top_concepts(self.influence(), n, class_id)]
        if self.concept is not None and self.concept not in order:
            order = [self.concept] + order[: max(n - 1, 0)]
        return order

    def select_cell(self, row: int, col: int, n: int, sort: str = "any class") -> None:
        """Select the concept and class of a heatmap cell (column 0 selects the concept only)."""
        order = self.heatmap_order(n, sort)
        row = check_integer("heatmap row", row, 0, len(order) - 1)
        col = check_integer("heatmap column", col, 0, len(self.session.class_names))
        self.concept, self.image = order[row], None
        if col >= 1:
            self.class_id = col - 1

    def open_concept_image(self, index: int) -> None:
        """Show the ``index``-th image of the selected concept's gallery (its most present images)."""
        self.require("selection")
        positions = images_with_concept(self.features, self.concept, CONCEPT_IMAGES)
        self.image = int(positions[check_integer("image", index, 0, len(positions) - 1)])

    def open_subset(self, index: int) -> None:
        """Open the ``index``-th disagreement subset of the validation images (largest first)."""
        subsets = self.disagreement_subsets()
        if not subsets:
            raise ConfigError("The student agrees with the teacher on every validation image: no subset to open.")
        self.subset = subsets[check_integer("subset", index, 0, len(subsets) - 1)]["positions"]

    def disagreement_subsets(self) -> list[dict]:
        """Where the student and the teacher differ on the validation images, largest group first."""
        self.require("session")
        return disagreement_subsets(self.features, self.session.student, np.nonzero(self.features.is_val)[0])

    def image_of(self, position: int) -> Image.Image:
        """The dataset image at a FeatureSet position."""
        return self.source.images([int(position)])[0]

    # -- tuning ---------------------------------------------------------------------------------------
    def edit(self, action: str, factor: float | None = None) -> Edit:
        self.require("session")
        self.require("selection")
        action = Action.parse(action)
        if action.scales:
            factor = check_number("factor", factor, 1.0, low_open=True)
        return Edit(action.value, self.session.concepts[self.concept], self.session.class_names[self.class_id],
                    factor if action.scales else None)

    def preview(self, action: str, factor: float | None = None) -> Preview:
        edit = self.edit(action, factor)
        return self.session.preview(edit, refit=True)

    def apply(self, action: str, factor: float | None = None) -> LogEntry:
        edit = self.edit(action, factor)
        return self.session.apply(edit)

    def import_log(self, path: str | os.PathLike, keep_dir: str | os.PathLike | None = None) -> Path | None:
        """Replay a log (recorded on these features) as the session of its student's NEC target. A session
        with edits that it replaces is exported first, to a file in ``keep_dir`` whose path is returned."""
        self.require("features")
        session = TuningSession.replay(self.features, path, strict=False)
        nec = session.initial.config.nec or int(round(session.initial.nec))
        key = (self.features.fingerprint, nec)
        kept = None
        previous = self.sessions.get(key)
        if previous is not None and len(previous.log) > 1:
            folder = Path(keep_dir or tempfile.mkdtemp(prefix="infincond-replaced-"))
            kept = folder / f"replaced-tuning-log-nec{nec}-{uuid.uuid4().hex[:6]}.json"
            previous.export_log(kept)
        self.sessions[key] = session
        self.nec, self.image, self.subset = nec, None, None
        if self.concept is None or self.class_id is None:
            self.select_strongest()
        return kept

    # -- sharing --------------------------------------------------------------------------------------
    def concept_student(self) -> ConceptStudent:
        self.require("session")
        return ConceptStudent.from_session(self.session, self.encoder)

    def save(self, folder: str | os.PathLike) -> Path:
        """Save the student into ``folder`` (new, empty, or holding a previous student, replaced whole):
        weights, config, concepts, metrics, tuning log and model card."""
        folder = Path(folder).expanduser()
        self.concept_student().save_pretrained(folder)
        return folder

    def zip(self) -> Path:
        """The saved student as a zip file in a fresh temporary folder."""
        student = self.concept_student()
        folder = Path(tempfile.mkdtemp(prefix="infincond-"))
        student.save_pretrained(folder / "student")
        target = folder / "infincond-student.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((folder / "student").rglob("*")):
                archive.write(path, path.relative_to(folder / "student"))
        return target

    def push(self, repo_id: str, token: str | None, private: bool = False) -> str:
        """Push the student to the Hub (one commit: weights, config, concepts, metrics, tuning log and model
        card); returns the repo URL."""
        repo_id = check_repo_id(repo_id)
        if not token:
            raise ConfigError("No Hugging Face token: set HF_TOKEN, or sign in with Hugging Face on a Space.")
        info = self.concept_student().push_to_hub(repo_id, private=private, token=token)
        return str(info.repo_url)
