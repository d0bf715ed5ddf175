"""What the views read from a workspace, derived from its state by the core and computed once: per student
state (influence, metrics, disagreement subsets, the shortcut audit: a state never changes) or per
FeatureSet, shared by every session (the concept galleries, the group choices). A mixin of
:class:`~infincond.ui.workspace.Workspace`: it reads the workspace's fields and never changes them."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from PIL import Image

from ..analysis import class_presence, disagreement_subsets, images_with_concept, influence, top_concepts
from ..audit import AuditReport, Finding, audit, concept_map
from ..errors import ConfigError
from ..groups import CONCEPT_PREFIX, categorical_columns
from ..metrics import Metrics

CONCEPT_IMAGES = 12  # images in the concept gallery
#: The heatmap's row orders: the strongest concepts on any class, or on the selected class.
SORTS = ("any class", "selected class")
#: The heatmap's default size (top concepts) and order, and the most concepts it shows.
TOP_CONCEPTS, MAX_TOP_CONCEPTS = 20, 500
#: What of a workspace a view can show; an event changes some of them (see :meth:`Derived.aspects`).
ASPECTS = ("data", "student", "weights", "selection", "concept", "image", "subset", "finding", "groups", "heatmap",
           "concepts")


class Derived:
    """Read-only views of a workspace's state (see the module docstring)."""

    def require(self, what: str) -> None:
        """Raise a clear error when a step is missing."""
        if self.features is None:  # the first step of all
            raise ConfigError("Load a teacher and a dataset first.")
        missing = {"features": False, "sweep": not self.sweep, "session": self.session is None,
                   "selection": self.concept is None or self.class_id is None}[what]
        if missing:
            message = {"features": "Load a teacher and a dataset first.", "sweep": "Distil a student first.",
                       "session": "Distil a student first.",
                       "selection": "Select a concept and a class first (click a cell of the heatmap)."}[what]
            raise ConfigError(message)

    def aspects(self) -> dict[str, Hashable]:
        """A fingerprint of each aspect of the state a view shows (:data:`ASPECTS`): an event changed an
        aspect when its fingerprint differs after the event."""
        session = self.session
        shown = self.shown_finding() if session is not None else None
        return {"data": (id(self.source), id(self.settings), self.features is None),
                "student": (None if self.features is None else self.features.fingerprint, self.nec, id(session)),
                "weights": None if session is None else (session.cursor, len(session.log)),
                "selection": (self.concept, self.class_id), "concept": self.concept, "image": self.image,
                "subset": self.subset,
                "finding": None if shown is None else (shown.class_name, shown.concept, self.finding is None),
                "groups": id(self.groups), "heatmap": (self.heat_n, self.heat_sort),
                "concepts": None if self.features is None else self.features.num_concepts}

    def session_or_fail(self):
        """The tuning session of the student being tuned; a clear error before one is picked."""
        self.require("session")
        return self.session

    def _derived(self, name: str, compute):
        """``compute()`` cached on the current student state (states never change)."""
        cache = self.session.state.cache
        if name not in cache:
            cache[name] = compute()
        return cache[name]

    def _for_features(self, name: str, compute, item: Hashable = None):
        """``compute()`` kept for every session on these features (by their fingerprint, which covers the
        concepts added); made afresh for features without one. With ``item``, one of many (a concept's):
        kept in one entry per features, so that they do not push the others out of the bounded cache."""
        fingerprint = self.features.fingerprint
        if item is None:
            return self.shared.get("derived", (name, fingerprint), compute) if fingerprint else compute()
        kept = self.shared.get("derived", (name, fingerprint), dict) if fingerprint else {}
        if item not in kept:
            kept[item] = compute()
        return kept[item]

    def influence(self) -> np.ndarray:
        """Influence (C, K) of each concept on each class (weight x mean presence on the class's images)."""
        self.require("session")
        presence = self._for_features("class_presence", lambda: class_presence(self.features, self.session.initial))
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

    def shown_finding(self) -> Finding | None:
        """The finding whose images the audit view shows: the one opened, else the first."""
        findings = self.audit().findings
        return self.opened_finding() or (findings[0] if findings else None)

    def concept_maps(self, positions, concept: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Where ``concept`` is in each image at ``positions``: its presence per region and the regions' boxes."""
        return [concept_map(self.features, int(p), int(concept)) for p in positions]

    def group_choices(self) -> list[str]:
        """What groups can be: the dataset's categorical columns (read once per dataset), then
        "concept:<name>" for the concepts the audit flags."""
        if self.features is None:
            return []
        columns = [] if self.source is None else self.shared.get(
            "derived", ("columns", self.source.fingerprint),
            lambda: categorical_columns(self.source.dataset, exclude=(self.source.image_column,
                                                                       self.source.label_column)))
        flagged = [] if self.session is None else [f.concept for f in self.audit().findings]
        return columns + [CONCEPT_PREFIX + c for c in dict.fromkeys(flagged)]

    def concept_images(self, concept: int) -> np.ndarray:
        """Positions of the images where ``concept`` is most present (the same for every student)."""
        return self._for_features("images", lambda: images_with_concept(self.features, int(concept), CONCEPT_IMAGES),
                                  int(concept))

    def heatmap_order(self) -> list[int]:
        """The concepts (indices) of the heatmap's rows: the ``heat_n`` most influential on any class, or on
        the selected class, with the selected concept always among them."""
        class_id = self.class_id if self.heat_sort == "selected class" else None
        order = [int(k) for k in top_concepts(self.influence(), self.heat_n, class_id)]
        if self.concept is not None and self.concept not in order:
            order = [self.concept] + order[: max(self.heat_n - 1, 0)]
        return order

    def proxies(self) -> list[tuple[str, float]]:
        """The proxies of the selected concept (what removing it holds at 0), with their correlation."""
        self.require("selection")
        concept = self.session.concepts[self.concept]  # a property of the features: kept for every session
        return self._for_features("proxies", lambda: self.session.proxies(concept), concept)

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

    @property
    def can_add_concepts(self) -> bool:
        """Whether the features kept their region embeddings and the encoder is at hand."""
        return (self.features is not None and self.encoder is not None
                and getattr(self.features, "region_embeddings", None) is not None)
