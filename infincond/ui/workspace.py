"""One user's workspace: what was loaded, the students of the sparsity sweep, a tuning session per student
and the current selection. It only calls the core. Models, datasets, FeatureSets and sweeps come from the
process-wide :data:`~infincond.shared.SHARED` cache (read-only, shared by every session); a workspace owns
its tuning sessions and selection only, so two sessions never see each other's students. Everything it
does is autosaved under the cache, keyed by its id, so that a reload or a restart can restore it.

(About 390 lines, over the project's 350: it is the one object every event goes through, and each of its
methods is a few lines over the core; splitting it would scatter the session's state.)"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..analysis import (
    SweepPoint,
    class_presence,
    disagreement_subsets,
    images_with_concept,
    influence,
    nec_sweep,
    top_concepts,
)
from ..audit import AuditReport, Finding, audit, concept_map
from ..checks import check_integer, check_number
from ..concepts.encoder import ConceptEncoder
from ..data import ImageSource
from ..distill import DistillConfig
from ..errors import ConfigError
from ..features import FeatureSet
from ..groups import CONCEPT_PREFIX, Groups, categorical_columns, groups_for
from ..hub import check_repo_id
from ..linear import standardisation
from ..metrics import Metrics
from ..pipeline import extract_concepts, load_inputs
from ..shared import SHARED, SharedCache
from ..student import ConceptStudent
from ..teacher import Teacher
from ..tuning import Action, Edit, LogEntry, Preview, TuningSession
from . import autosave
from .settings import LoadSettings

DEFAULT_SWEEP = (1, 2, 3, 5, 10, 20)
MAX_NEC = 200
CONCEPT_IMAGES = 12  # images in the concept gallery


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


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
    subset: tuple[str, str] | None = None  # the opened disagreement subset: (teacher says, student says)
    added_concepts: list[str] = field(default_factory=list)  # typed in after loading (scored on kept regions)
    groups: Groups | None = None  # class x the chosen attribute, on every row of the features
    finding: tuple[str, str] | None = None  # the shortcut audit's opened finding: (class, concept)
    id: str = field(default_factory=_new_id)
    cache_dir: str | None = None
    shared: SharedCache = field(default=SHARED, repr=False)
    _saved: dict = field(default_factory=dict, repr=False)  # autosave: log length written per session

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

    def require(self, what: str) -> None:
        """Raise a clear error when a step is missing."""
        missing = {"features": self.features is None, "sweep": not self.sweep, "session": self.session is None,
                   "selection": self.concept is None or self.class_id is None}[what]
        if missing:
            message = {"features": "Load a teacher and a dataset first.", "sweep": "Distil a student first.",
                       "session": "Distil a student first.",
                       "selection": "Select a concept and a class first (click a cell of the heatmap)."}[what]
            raise ConfigError(message)

    # -- loading and distillation ---------------------------------------------------------------------
    def load(self, settings: LoadSettings, progress: bool = True) -> None:
        """Load the teacher, dataset and encoder and extract concept scores (from the shared and the disk
        caches when another session or run had them). Tuning sessions with edits are kept (they come back
        when the same data is loaded again); the others are dropped."""
        inputs = load_inputs(settings.teacher, settings.data_config(), settings.encoder, settings.corpus_value(),
                             progress=progress, cache=self.shared)
        features = extract_concepts(inputs, self.cache_dir, progress, cache=self.shared)
        groups = groups_for(features, inputs.source, settings.group_column)  # a bad column is refused here
        self.settings, self.source, self.teacher, self.encoder = settings, inputs.source, inputs.teacher, inputs.encoder
        self._use(features)
        self.groups = groups

    def load_features(self, features: FeatureSet, source: ImageSource | None = None,
                      encoder: ConceptEncoder | None = None) -> None:
        """Work on a FeatureSet made elsewhere (``infincond extract``, a benchmark): its images come from
        ``source`` when given (else the galleries stay empty), new concepts need its ``encoder``."""
        self.settings, self.source, self.teacher, self.encoder = None, source, None, encoder
        self._use(features)

    def _use(self, features: FeatureSet) -> None:
        self.features, self.added_concepts, self.groups, self.finding = features, [], None, None
        self.sessions = {key: s for key, s in self.sessions.items() if len(s.log) > 1 or key[0] == features.fingerprint}
        self.sweep, self.nec = [], None
        self.concept, self.class_id, self.image, self.subset = None, None, None, None

    def distill(self, nec: int, necs: tuple[int, ...] = DEFAULT_SWEEP, progress: bool = True) -> None:
        """Fit students at several NEC targets (``nec`` among them; one shared L1 path, and shared with
        every session on the same features) and tune the one at ``nec`` (its session is kept if it already
        has one)."""
        self.require("features")
        nec = check_integer("NEC (concepts per class)", nec, 1, MAX_NEC)
        targets = tuple(sorted({*necs, nec}))
        key = (self.features.fingerprint, targets, json.dumps(DistillConfig().to_dict(), sort_keys=True))
        self.sweep = self.shared.get("sweep", key, lambda: nec_sweep(self.features, targets, DistillConfig(),
                                                                     progress=progress))
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
            self.sessions[key] = TuningSession(self.features, point.student, groups=self.groups)
        elif self.sessions[key].groups is not self.groups:
            self.sessions[key].set_groups(self.groups)
        self.nec, self.image, self.subset = nec, None, None
        if self.concept is None or self.class_id is None:
            self.select_strongest()

    # -- what the views show, derived once per student state ------------------------------------------
    def _derived(self, name: str, compute):
        """``compute()`` cached on the current student state (states never change)."""
        cache = self.session.state.cache
        if name not in cache:
            cache[name] = compute()
        return cache[name]

    def influence(self) -> np.ndarray:
        """Influence (C, K) of each concept on each class (weight x mean presence on the class's images)."""
        self.require("session")
        presence = self.shared.get("derived", ("class_presence", self.features.fingerprint),
                                   lambda: class_presence(self.features, self.session.initial))
        return self._derived("influence", lambda: influence(self.session.weight, presence))

    def evaluation(self) -> Metrics:
        """The current student's full metrics on the evaluation rows."""
        self.require("session")
        return self._derived("evaluation", self.session.evaluate)

    def disagreement_subsets(self) -> list[dict]:
        """Where the student and the teacher differ on the validation images, largest group first."""
        self.require("session")
        rows = np.nonzero(self.features.is_val)[0]
        return self._derived("subsets", lambda: disagreement_subsets(self.features, self.session.student, rows))

    def subset_positions(self) -> np.ndarray | None:
        """Positions of the opened disagreement subset, for the current student (None when none is open)."""
        if self.subset is None or self.session is None:
            return None
        group = next((g for g in self.disagreement_subsets() if (g["teacher"], g["student"]) == self.subset), None)
        return group["positions"] if group is not None else np.zeros(0, dtype=np.int64)

    def audit(self) -> AuditReport:
        """The shortcut audit of the current student's teacher on the validation rows (see
        :func:`infincond.audit.audit`)."""
        self.require("session")
        return self._derived("audit", lambda: audit(self.features, self.session.student, influence=self.influence()))

    def opened_finding(self) -> Finding | None:
        """The audit's finding opened last (None when none is, or it is gone after an edit)."""
        if self.finding is None or self.session is None:
            return None
        return next((f for f in self.audit().findings if (f.class_name, f.concept) == self.finding), None)

    def open_finding(self, index: int) -> None:
        """Open the ``index``-th finding of the audit: its images, and its (concept, class) selected for tuning."""
        findings = self.audit().findings
        if not findings:
            raise ConfigError("The audit found nothing to open.")
        f = findings[check_integer("finding", index, 0, len(findings) - 1)]
        self.select(f.concept, f.class_name)
        self.finding = (f.class_name, f.concept)

    def concept_maps(self, positions, concept: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Where ``concept`` is in each image at ``positions``: its presence per region and the regions' boxes."""
        return [concept_map(self.features, int(p), int(concept)) for p in positions]

    # -- groups ---------------------------------------------------------------------------------------
    def group_choices(self) -> list[str]:
        """What groups can be: the dataset's categorical columns, then "concept:<name>" for the concepts the
        audit flags (the top finding of each class)."""
        if self.features is None:
            return []
        columns = [] if self.source is None else categorical_columns(
            self.source.dataset, exclude=(self.source.image_column, self.source.label_column))
        flagged = [] if self.session is None else [f.concept for f in self.audit().findings]
        return columns + [CONCEPT_PREFIX + c for c in dict.fromkeys(flagged)]

    def set_groups(self, choice: str | None) -> None:
        """Measure worst-group accuracy on class x ``choice`` (a column, "concept:<name>", or "" for none):
        every tuning session's metrics, past steps included, are measured again."""
        self.require("features")
        groups = groups_for(self.features, self.source, choice or "")
        self.groups = groups
        if self.settings is not None:
            self.settings = replace(self.settings, group_column=choice or "")
        for (fingerprint, _), session in self.sessions.items():
            if fingerprint == self.features.fingerprint:
                session.set_groups(groups)

    def concept_images(self, concept: int) -> np.ndarray:
        """Positions of the images where ``concept`` is most present (the same for every student)."""
        return self.shared.get("derived", ("images", self.features.fingerprint, int(concept)),
                               lambda: images_with_concept(self.features, int(concept), CONCEPT_IMAGES))

    # -- selection ------------------------------------------------------------------------------------
    def select_strongest(self) -> None:
        """Select the (concept, class) with the largest |influence|."""
        influence = self.influence()
        c, k = np.unravel_index(int(np.argmax(np.abs(influence))), influence.shape)
        self.concept, self.class_id = int(k), int(c)

    def select(self, concept: str, class_name: str) -> None:
        """Select a (concept, class) by name; an unknown name changes nothing."""
        self.require("session")
        concept_id, class_id = self.session.concept_id(concept), self.session.class_id(class_name)
        if concept_id != self.concept:
            self.image = None
        self.concept, self.class_id = concept_id, class_id

    def proxies(self) -> list[tuple[str, float]]:
        """The proxies of the selected concept (what removing it holds), with their correlation."""
        self.require("selection")
        return self.session.proxies(self.session.concepts[self.concept])

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
        if order[row] != self.concept:
            self.image = None
        self.concept = order[row]
        if col >= 1:
            self.class_id = col - 1

    def open_concept_image(self, index: int) -> None:
        """Show the ``index``-th image of the selected concept's gallery (its most present images)."""
        self.require("selection")
        positions = self.concept_images(self.concept)
        self.image = int(positions[check_integer("image", index, 0, len(positions) - 1)])

    def open_subset(self, index: int) -> None:
        """Open the ``index``-th disagreement subset of the validation images (largest first)."""
        subsets = self.disagreement_subsets()
        if not subsets:
            raise ConfigError("The student agrees with the teacher on every validation image: no subset to open.")
        group = subsets[check_integer("subset", index, 0, len(subsets) - 1)]
        self.subset = (group["teacher"], group["student"])

    def images_of(self, positions) -> list[Image.Image] | None:
        """The dataset images at FeatureSet positions, found by their dataset rows (rows whose image could
        not be read are not in the FeatureSet), in one read; None when the features came without images."""
        if self.source is None:
            return None
        return self.source.images_at_rows([int(self.features.image_ids[int(p)]) for p in positions])

    def image_of(self, position: int) -> Image.Image | None:
        """The dataset image at a FeatureSet position (see :meth:`images_of`)."""
        images = self.images_of([position])
        return None if images is None else images[0]

    # -- new concepts, scored without an image pass ----------------------------------------------------
    @property
    def can_add_concepts(self) -> bool:
        """Whether the features kept their region embeddings and the encoder is at hand."""
        return (self.features is not None and self.encoder is not None
                and getattr(self.features, "region_embeddings", None) is not None)

    def add_concepts(self, text: str) -> list[str]:
        """Add concepts (comma-separated) to the features, scored on the kept regions (text tower only, no
        image pass), and to every student (weight 0, so nothing it predicts changes; each session's log is
        re-run on the wider features, exactly). Selects the first one, so that its images show and it can be
        tuned. Returns the concepts added (ones already there are just selected)."""
        self.require("session")
        names = [t.strip() for t in str(text or "").replace("\n", ",").split(",") if t.strip()]
        if not names:
            raise ConfigError("Type a concept to add (several: comma-separated).")
        if not self.can_add_concepts:
            raise ConfigError("These features were extracted without their region embeddings (or without the "
                              "encoder), so a concept cannot be added without a new image pass: add it to your "
                              "concepts and Load again.")
        before = self.features.num_concepts
        features = self.features.with_concepts(names, self.encoder)
        added = list(features.concepts[before:])
        if added:
            self._widen(features)
            self.added_concepts = [*self.added_concepts, *added]
        first = self.session.concept_id(added[0] if added else names[0])
        self.concept, self.image = first, None
        return added

    def _widen(self, features: FeatureSet) -> None:
        """Move the sweep and every session of the current features onto ``features`` (more concepts)."""
        old, k = self.features.fingerprint, self.features.num_concepts
        mean, std = standardisation(features.concept_scores[~features.is_val][:, k:])
        self.sweep = [SweepPoint(p.nec_target, p.student.widened(mean, std), p.metrics) for p in self.sweep]
        for (fingerprint, nec), session in list(self.sessions.items()):
            if fingerprint == old:
                self.sessions[(features.fingerprint, nec)] = session.widen(features)
                del self.sessions[(fingerprint, nec)]
        self.features = features

    # -- tuning ---------------------------------------------------------------------------------------
    def edit(self, action: str, factor: float | None = None, release: list[str] | None = None,
             label_weight: float | None = None) -> Edit:
        """The edit of the selection. For a remove: ``release``, proxies not to hold (the others it finds are
        held), ``label_weight``: blend the labels in the same refit (None: no)."""
        self.require("session")
        self.require("selection")
        action = Action.parse(action)
        if action.scales:
            factor = check_number("factor", factor, 1.0, low_open=True)
        concept, class_name = self.session.concepts[self.concept], self.session.class_names[self.class_id]
        if action != Action.REMOVE:
            return Edit(action.value, concept, class_name, factor if action.scales else None)
        found = [name for name, _ in self.proxies()]
        unknown = set(release or ()) - set(found)
        if unknown:
            raise ConfigError(f"{sorted(unknown)} are not proxies of '{concept}': release some of {found}, or none.")
        if label_weight is not None:
            label_weight = check_number("alpha", label_weight, 0.0, 1.0)
        return Edit(action.value, concept, class_name, released=tuple(p for p in found if p in set(release or ())),
                    label_weight=label_weight)

    def preview(self, action: str, factor: float | None = None, release: list[str] | None = None,
                label_weight: float | None = None, refit: bool = True) -> Preview:
        """What the edit would do: with ``refit`` exactly what Apply gives, else at once (the edited weights
        moved, the others held)."""
        edit = self.edit(action, factor, release, label_weight)  # checks that there is a session first
        return self.session.preview(edit, refit=refit)

    def apply(self, action: str, factor: float | None = None, release: list[str] | None = None,
              label_weight: float | None = None) -> LogEntry:
        edit = self.edit(action, factor, release, label_weight)
        return self.session.apply(edit)

    def blend(self, alpha: float) -> LogEntry:
        self.require("session")
        return self.session.set_label_weight(check_number("alpha", alpha, 0.0, 1.0))

    def move(self, which: str, step: int | None = None) -> LogEntry:
        """Undo, redo, or jump to ``step`` of the log."""
        self.require("session")
        if which == "jump":
            return self.session.jump(check_integer("step", step, 0))
        return self.session.undo() if which == "undo" else self.session.redo()

    def import_log(self, path: str | os.PathLike) -> Path | None:
        """Replay a log (recorded on these features) as the session of its student's NEC target. A session
        with edits that it replaces is exported first, into the session folder, whose path is returned."""
        self.require("features")
        session = TuningSession.replay(self.features, path, strict=False, groups=self.groups)
        nec = session.initial.config.nec or int(round(session.initial.nec))
        key = (self.features.fingerprint, nec)
        kept = None
        previous = self.sessions.get(key)
        if previous is not None and len(previous.log) > 1:
            kept = self.folder / "replaced-logs" / f"tuning-log-nec{nec}-{uuid.uuid4().hex[:6]}.json"
            previous.export_log(kept)
        self.sessions[key] = session
        self._saved.pop(key, None)
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
        weights, config, metrics, tuning log and model card."""
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
        """Push the student to the Hub (one commit: weights, config, metrics, tuning log and model card);
        returns the repo URL."""
        repo_id = check_repo_id(repo_id)
        if not token:
            raise ConfigError("No Hugging Face token: set HF_TOKEN, or sign in with Hugging Face on a Space.")
        info = self.concept_student().push_to_hub(repo_id, private=private, token=token)
        return str(info.repo_url)

    # -- autosave and restore -------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """This session's folder under the cache (autosave, saved students, kept logs)."""
        return autosave.session_folder(self.cache_dir, self.id)

    def autosave(self) -> None:
        """Save what changed since the last autosave (see :func:`infincond.ui.autosave.save`)."""
        autosave.save(self)

    def restore(self, saved: autosave.Autosave, progress: bool = True) -> int:
        """Bring back an autosaved session (see :func:`infincond.ui.autosave.restore`)."""
        return autosave.restore(self, saved, progress)
