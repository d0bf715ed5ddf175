"""One user's workspace: what was loaded, the students of the sparsity sweep, the tuning session and the
current selection. It only calls the core; one instance lives in each browser session's ``gr.State``,
so two sessions never share a student."""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..analysis import SweepPoint, concept_influence, nec_sweep
from ..concepts.corpus import ConceptCorpus
from ..concepts.encoder import ConceptEncoder
from ..data import DataConfig, ImageSource
from ..distill import DistillConfig
from ..errors import ConfigError
from ..features import ExtractConfig, FeatureSet, extract_features
from ..student import ConceptStudent
from ..teacher import Teacher
from ..tuning import Edit, LogEntry, Preview, TuningSession

DEFAULT_SWEEP = (1, 2, 3, 5, 10, 20)


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
    samples: int = 1000
    corpus: str = "builtin+typed"
    concepts_text: str = ""
    corpus_file: str | None = None

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
    """A user's state across the six views."""

    settings: LoadSettings | None = None
    source: ImageSource | None = None
    teacher: Teacher | None = None
    encoder: ConceptEncoder | None = None
    features: FeatureSet | None = None
    sweep: list[SweepPoint] = field(default_factory=list)
    session: TuningSession | None = None
    nec: int | None = None  # the NEC target of the student being tuned
    concept: int | None = None
    class_id: int | None = None
    image: int | None = None  # a FeatureSet position
    subset: np.ndarray | None = None  # positions of the opened disagreement subset

    # -- loading and distillation ---------------------------------------------------------------------
    def load(self, settings: LoadSettings, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> None:
        """Load the teacher, dataset and encoder and extract concept scores (cached); resets the students."""
        source = ImageSource.load(DataConfig(settings.dataset, config_name=settings.config_name or None,
                                             split=settings.split or None, image_column=settings.image_column,
                                             label_column=settings.label_column, samples=settings.samples))
        teacher = Teacher.from_pretrained(settings.teacher, dataset_label_names=source.label_names)
        encoder = ConceptEncoder.from_pretrained(settings.encoder)
        features = extract_features(source, teacher, encoder, settings.corpus_value(), ExtractConfig(),
                                    cache_dir=cache_dir, progress=progress)
        self.settings, self.source, self.teacher, self.encoder, self.features = settings, source, teacher, encoder, features
        self.sweep, self.session, self.nec = [], None, None
        self.concept, self.class_id, self.image, self.subset = None, None, None, None

    def distill(self, nec: int, necs: tuple[int, ...] = DEFAULT_SWEEP, progress: bool = True) -> None:
        """Fit students at several NEC targets (``nec`` among them) and start tuning the one at ``nec``."""
        self.require("features")
        self.sweep = nec_sweep(self.features, tuple(necs) + (int(nec),), DistillConfig(), progress=progress)
        self.pick(int(nec))

    def pick(self, nec: int) -> None:
        """Tune the sweep's student at this NEC target (a new tuning session)."""
        self.require("sweep")
        point = next((p for p in self.sweep if p.nec_target == int(nec)), None)
        if point is None:
            raise ConfigError(f"No student at NEC {nec}; the sweep has {[p.nec_target for p in self.sweep]}.")
        self.session = TuningSession(self.features, point.student)
        self.nec, self.image, self.subset = int(nec), None, None
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
        self.require("session")
        self.concept = self.session.concept_id(concept)
        self.class_id = self.session.class_id(class_name)

    def image_of(self, position: int) -> Image.Image:
        """The dataset image at a FeatureSet position (mapped through the image ids: rows whose image could
        not be read are not in the FeatureSet)."""
        sample_position = int(np.searchsorted(self.source.image_ids, self.features.image_ids[int(position)]))
        return self.source.images([sample_position])[0]

    # -- tuning ---------------------------------------------------------------------------------------
    def edit(self, action: str, factor: float | None = None) -> Edit:
        self.require("session")
        self.require("selection")
        return Edit(action, self.session.concepts[self.concept], self.session.class_names[self.class_id],
                    factor if action in ("up", "down") else None)

    def preview(self, action: str, factor: float | None = None) -> Preview:
        edit = self.edit(action, factor)
        return self.session.preview(edit, refit=True)

    def apply(self, action: str, factor: float | None = None) -> LogEntry:
        edit = self.edit(action, factor)
        return self.session.apply(edit)

    def import_log(self, path: str | os.PathLike) -> None:
        """Replace the session with a replayed log (recorded on these features)."""
        self.require("features")
        self.session = TuningSession.replay(self.features, path, strict=False)

    # -- sharing --------------------------------------------------------------------------------------
    def concept_student(self) -> ConceptStudent:
        self.require("session")
        return self.session.concept_student(self.encoder)

    def save(self, folder: str | os.PathLike) -> Path:
        """Save the student into ``folder``: weights, config, concepts, metrics, tuning log and model card."""
        folder = Path(folder)
        self.concept_student().save_pretrained(folder)
        return folder

    def zip(self) -> Path:
        """The saved student as a zip file in a fresh temporary folder."""
        folder = Path(tempfile.mkdtemp(prefix="infincond-"))
        self.save(folder / "student")
        target = folder / "infincond-student.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((folder / "student").rglob("*")):
                archive.write(path, path.relative_to(folder / "student"))
        return target

    def push(self, repo_id: str, token: str | None, private: bool = False) -> str:
        """Push the student to the Hub (one commit: weights, config, concepts, metrics, tuning log and model
        card); returns the repo URL."""
        if not (repo_id or "").strip():
            raise ConfigError("Give a repo name, e.g. 'your-name/shapes-student'.")
        if not token:
            raise ConfigError("No Hugging Face token: set HF_TOKEN, or sign in with Hugging Face on a Space.")
        info = self.concept_student().push_to_hub(repo_id.strip(), private=private, token=token)
        return str(info.repo_url)
