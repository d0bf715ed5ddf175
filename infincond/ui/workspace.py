"""One user's workspace: what was loaded, the students of the sparsity sweep, a tuning session per student,
the selection and the heatmap's options. It only calls the core. Models, datasets, FeatureSets and sweeps
come from the process-wide :data:`~infincond.shared.SHARED` cache (read-only, shared by every session); a
workspace owns its tuning sessions and selection only, so two sessions never see each other's students.
Its events run one at a time (:attr:`Workspace.lock`), each in a transaction, and everything it does is
autosaved under the cache, keyed by its id, so that a reload or a restart can restore it. What the views
read from it is derived in :mod:`.derived`; what leaves it and comes back is :mod:`.persistence`."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ..analysis import SweepPoint, nec_sweep
from ..checks import check_choice, check_factor, check_integer, check_label_weight
from ..concepts.encoder import ConceptEncoder
from ..data import ImageSource
from ..distill import DistillConfig
from ..errors import ConfigError
from ..features import FeatureSet
from ..groups import Groups, groups_for
from ..pipeline import extract_concepts, load_inputs
from ..shared import SHARED, SharedCache
from ..teacher import Teacher
from ..tuning import Action, Edit, LogEntry, Preview, TuningSession
from .derived import MAX_TOP_CONCEPTS, SORTS, TOP_CONCEPTS, Derived
from .persistence import Persistence
from .settings import LoadSettings

DEFAULT_SWEEP = (1, 2, 3, 5, 10, 20)
MAX_NEC = 200


def new_id() -> str:
    """A fresh session id."""
    return uuid.uuid4().hex[:16]


@dataclass
class Workspace(Derived, Persistence):
    """A user's state across the views.

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
    finding: tuple[str, str] | None = None  # the shortcut audit's opened finding: (class, concept)
    heat_n: int = TOP_CONCEPTS  # the heatmap's rows
    heat_sort: str = SORTS[0]  # the heatmap's order
    added_concepts: list[str] = field(default_factory=list)  # typed in after loading (scored on kept regions)
    groups: Groups | None = None  # class x the chosen attribute, on every row of the features
    id: str = field(default_factory=new_id)
    cache_dir: str | None = None
    shared: SharedCache = field(default=SHARED, repr=False)
    #: Runs this workspace's events one at a time (a chained refit and an Apply clicked meanwhile would
    #: otherwise edit the same session at once).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _saved: dict = field(default_factory=dict, repr=False)  # autosave: per session log, length written and
    # journal memo; "state": where the workspace stood when last written
    default_sweep = DEFAULT_SWEEP

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

    # -- selection ------------------------------------------------------------------------------------
    def select_strongest(self) -> None:
        """Select the (concept, class) with the largest |influence|."""
        influence = self.influence()
        c, k = divmod(int(abs(influence).argmax()), influence.shape[1])
        self.concept, self.class_id = int(k), int(c)

    def select(self, concept: str, class_name: str) -> None:
        """Select a (concept, class) by name; an unknown name changes nothing."""
        self.require("session")
        concept_id, class_id = self.session.concept_id(concept), self.session.class_id(class_name)
        if concept_id != self.concept:
            self.image = None
        self.concept, self.class_id = concept_id, class_id

    def set_heatmap(self, top_n: int, sort: str) -> None:
        """The heatmap's size (its top concepts) and order (:data:`~.derived.SORTS`)."""
        self.heat_n = check_integer("top concepts", top_n, 1, MAX_TOP_CONCEPTS)
        self.heat_sort = check_choice("sort", sort, SORTS)

    def select_cell(self, row: int, col: int) -> None:
        """Select the concept and class of a heatmap cell (column 0 selects the concept only)."""
        self.require("session")
        order = self.heatmap_order()
        row = check_integer("heatmap row", row, 0, len(order) - 1)
        col = check_integer("heatmap column", col, 0, len(self.session.class_names))
        if order[row] != self.concept:
            self.image = None
        self.concept = order[row]
        if col >= 1:
            self.class_id = col - 1

    def open_concept_image(self, index: int) -> None:
        """Show the ``index``-th image of the selected concept's gallery (its most present images)."""
        self.require("session")
        self.require("selection")
        positions = self.concept_images(self.concept)
        self.image = int(positions[check_integer("image", index, 0, len(positions) - 1)])

    def open_subset(self, index: int) -> None:
        """Open the ``index``-th disagreement subset of the validation images (largest first)."""
        self.require("session")
        subsets = self.disagreement_subsets()
        if not subsets:
            raise ConfigError("The student agrees with the teacher on every validation image: no subset to open.")
        group = subsets[check_integer("subset", index, 0, len(subsets) - 1)]
        self.subset = (group["teacher"], group["student"])

    def open_finding(self, index: int) -> None:
        """Open the ``index``-th finding of the audit: its images, and its (concept, class) selected for tuning."""
        self.require("session")
        findings = self.audit().findings
        if not findings:
            raise ConfigError("The audit found nothing to open.")
        f = findings[check_integer("finding", index, 0, len(findings) - 1)]
        self.select(f.concept, f.class_name)
        self.finding = (f.class_name, f.concept)

    # -- new concepts, scored without an image pass ----------------------------------------------------
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
        self.concept, self.image = self.session.concept_id(added[0] if added else names[0]), None
        return added

    def _widen(self, features: FeatureSet) -> None:
        """Move the sweep and every session of the current features onto ``features`` (more concepts)."""
        old, train = self.features.fingerprint, features.concept_scores[~features.is_val]
        self.sweep = [SweepPoint(p.nec_target, p.student.widened_to(train), p.metrics) for p in self.sweep]
        for (fingerprint, nec), session in list(self.sessions.items()):
            if fingerprint == old:
                self.sessions[(features.fingerprint, nec)] = session.widen(features)
                del self.sessions[(fingerprint, nec)]
        self.features = features

    # -- tuning ---------------------------------------------------------------------------------------
    def edit(self, action: str, factor: float | None = None, release: list[str] | None = None,
             label_weight: float | None = None) -> Edit:
        """The edit of the selection. For a remove: ``release``, proxies not to hold (the others it finds are
        held at 0 with it), ``label_weight``: blend the labels in the same refit (None: no)."""
        self.require("session")
        self.require("selection")
        action = Action.parse(action)
        if action.scales:
            factor = check_factor(factor, "factor")
        concept, class_name = self.session.concepts[self.concept], self.session.class_names[self.class_id]
        if action != Action.REMOVE:
            return Edit(action.value, concept, class_name, factor if action.scales else None)
        found = [name for name, _ in self.proxies()]
        unknown = set(release or ()) - set(found)
        if unknown:
            raise ConfigError(f"{sorted(unknown)} are not proxies of '{concept}': release some of {found}, or none.")
        if label_weight is not None:
            label_weight = check_label_weight(label_weight, "alpha")
        return Edit(action.value, concept, class_name, released=tuple(p for p in found if p in set(release or ())),
                    label_weight=label_weight)

    def preview(self, action: str, factor: float | None = None, release: list[str] | None = None,
                label_weight: float | None = None, refit: bool = True) -> Preview:
        """What the edit would do: with ``refit`` exactly what Apply gives, else at once (the edited weights
        moved, the others held)."""
        return self.session_or_fail().preview(self.edit(action, factor, release, label_weight), refit=refit)

    def apply(self, action: str, factor: float | None = None, release: list[str] | None = None,
              label_weight: float | None = None) -> LogEntry:
        return self.session_or_fail().apply(self.edit(action, factor, release, label_weight))

    def blend(self, alpha: float) -> LogEntry:
        return self.session_or_fail().set_label_weight(check_label_weight(alpha, "alpha"))

    def move(self, which: str, step: int | None = None) -> LogEntry:
        """Undo, redo, or jump to ``step`` of the log."""
        session = self.session_or_fail()
        if which == "jump":
            return session.jump(check_integer("step", step, 0))
        return session.undo() if which == "undo" else session.redo()

