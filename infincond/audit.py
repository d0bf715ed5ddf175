"""The shortcut audit: per class, the concepts the teacher relies on beyond the label, and the group of
images that reliance hurts.

**Evidence** (with labels). For class c and concept k, on labelled images: the correlation of k's
presence with the teacher's log-probability of c among the images labelled c, plus the same correlation
pooled within each other label. Both hold the label fixed, so a concept scores only where the teacher's
belief in c moves with it *beyond the label*: a circle lying on water is believed more a circle than one
on grass, and a square on water more a circle than one on sand. A true feature scores little: inside one
label, the class's own shape hardly varies. This is B2T's and Domino's idea (where does the model's
output move with a concept, label held) with the teacher's continuous belief instead of its few errors.

**Score** = evidence x (1 + the share of the class's largest influence the student gives the concept):
what the teacher relies on, first where the student reproduces it. A concept that tracks a higher-ranked
one within classes (:mod:`infincond.proxies`) is folded into that finding as one of its proxies. Without
labels the audit ranks by the student's influence alone, and says so.

Each finding measures the teacher and the student on the class's images with and without the concept
(:func:`infincond.groups.presence_split`), and names the group the reliance hurts: the class's images
without the concept (missed), or the other classes' images with it (taken for the class), whichever the
teacher gets wrong more often, with its images (the teacher's errors first).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .analysis import influence as class_influence
from .analysis import mean_by_class
from .errors import ConfigError
from .groups import presence_split
from .linear import LinearStudent, log_softmax
from .metrics import percent
from .proxies import PROXY_CORRELATION, Tracking, class_of_rows, group_sums

#: Findings per class (after folding proxies), and candidates looked at per class before folding.
PER_CLASS = 3
CANDIDATES = 40
#: Example images of the hurt group kept per finding.
EXAMPLES = 8


@dataclass
class Finding:
    """One concept the teacher relies on for one class. ``score`` ranks findings; ``evidence`` is None
    without labels. Accuracies (None without labels, or without such images) are on the class's
    labelled images with and without the concept. ``hurt_group`` names the images the reliance hurts,
    ``hurt_positions`` (FeatureSet positions) are some of them, the teacher's errors first."""

    class_name: str
    concept: str
    score: float
    evidence: float | None
    weight: float
    influence: float
    proxies: list[str]
    n_with: int
    n_without: int
    teacher_accuracy_with: float | None
    teacher_accuracy_without: float | None
    student_accuracy_with: float | None
    student_accuracy_without: float | None
    hurt_group: str
    hurt_n: int
    hurt_teacher_accuracy: float | None
    hurt_student_accuracy: float | None
    hurt_positions: np.ndarray = field(repr=False)
    hurt_image_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: ``class``, ``concept``, ``score`` first, then every figure."""
        out = asdict(self)
        del out["hurt_positions"]
        return {"class": out.pop("class_name"), "concept": out.pop("concept"), "score": out.pop("score"), **out}


@dataclass
class AuditReport:
    """Findings best first, on ``n_images`` images (``rows_used`` says which), with or without labels."""

    findings: list[Finding]
    labelled: bool
    n_images: int
    rows_used: str
    note: str
    seconds: float = 0.0

    def for_class(self, class_name: str) -> list[Finding]:
        return [f for f in self.findings if f.class_name == class_name]

    def rank(self, class_name: str, concept: str) -> int | None:
        """The 1-based rank of ``concept`` among the class's findings (its proxies count as it), or None."""
        for i, finding in enumerate(self.for_class(class_name), start=1):
            if concept == finding.concept or concept in finding.proxies:
                return i
        return None

    def format(self, top: int = 20) -> str:
        """The ``top`` findings as a table to read: the class, the concept, its score, the teacher's and the
        student's accuracy with / without it, the group it hurts, and what tracks it."""
        lines = [f"{'#':>3}  {'class':<14} {'concept':<22} {'score':>6}  teacher with / without  student with / "
                 "without  hurt group (images, teacher, student)"]
        for i, f in enumerate(self.findings[:top], start=1):
            tracked = f"  [tracked by {', '.join(f.proxies[:4])}{' ...' if len(f.proxies) > 4 else ''}]" \
                if f.proxies else ""
            lines.append(f"{i:>3}  {f.class_name:<14} {f.concept:<22} {f.score:6.2f}  "
                         f"{percent(f.teacher_accuracy_with, 7)} / {percent(f.teacher_accuracy_without, 7)}        "
                         f"{percent(f.student_accuracy_with, 7)} / {percent(f.student_accuracy_without, 7)}   "
                         f"{f.hurt_group} ({f.hurt_n}, {percent(f.hurt_teacher_accuracy)}, "
                         f"{percent(f.hurt_student_accuracy)}){tracked}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"labelled": self.labelled, "n_images": self.n_images, "rows_used": self.rows_used,
                "note": self.note, "findings": [f.to_dict() for f in self.findings]}


def _accuracy(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None


def evidence(standardised: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray,
             sums: tuple | None = None) -> np.ndarray:
    """The evidence (C, K) that the teacher relies on each concept for each class beyond the label: for
    class c, corr(presence, teacher log p(c)) among images labelled c, plus the same correlation pooled
    within each other label (see the module docstring). ``standardised`` (N, K) presence, ``labels`` (N,)
    teacher-class ids, all known, the rows sorted by label (so that each label's rows are one slice, read
    in place; ``sums``: their :func:`~infincond.proxies.group_sums` by label, when already known). Computed
    from per-label sums: about N x K x C multiply-adds."""
    x = np.asarray(standardised, dtype=np.float32)
    labels = np.asarray(labels)
    if np.any(np.diff(labels) < 0):
        raise ValueError("evidence() needs the rows sorted by label.")
    belief = log_softmax(teacher_logits).astype(np.float32)  # (N, C)
    c = belief.shape[1]
    present, counts, sum_x, sum_xx = _label_sums(x, labels, c, sums)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=c))])
    sum_m = np.zeros((c, c))
    sum_mm = np.zeros((c, c))
    sum_xm = np.zeros((c, x.shape[1], c))
    for g in np.nonzero(present)[0]:
        rows = slice(bounds[g], bounds[g + 1])
        sum_m[g], sum_mm[g] = belief[rows].sum(0), (belief[rows] ** 2).sum(0)
        sum_xm[g] = x[rows].T @ belief[rows]
    n = np.maximum(counts, 1.0)
    cov = sum_xm - sum_x[:, :, None] * sum_m[:, None, :] / n[:, None, None]  # (G, K, C) within each label
    var_x = sum_xx - sum_x**2 / n[:, None]  # (G, K)
    var_m = sum_mm - sum_m**2 / n[:, None]  # (G, C)

    def corr(cv, vx, vm):
        scale = np.sqrt(np.maximum(vx, 0.0) * max(vm, 0.0))
        return np.divide(cv, scale, out=np.zeros_like(cv), where=scale > 1e-12)

    out = np.zeros((c, x.shape[1]))
    for k in range(c):
        others = np.arange(c) != k
        out[k] = (corr(cov[k, :, k], var_x[k], var_m[k, k])
                  + corr(cov[others, :, k].sum(0), var_x[others].sum(0), var_m[others, k].sum()))
    return out


def _label_sums(x: np.ndarray, labels: np.ndarray, c: int, sums: tuple | None):
    """Which of the C labels have rows (C,) bool, and per label its size (C,), sums of x and of x squared
    (C, K), zero for an absent label."""
    counts, sums, squares = group_sums(x, labels) if sums is None else sums
    present = np.zeros(c, dtype=bool)
    ids = np.unique(labels)
    present[ids] = True
    full = [np.zeros(c), np.zeros((c, x.shape[1])), np.zeros((c, x.shape[1]))]
    for array, values in zip(full, (counts, sums, squares), strict=True):
        array[ids] = values
    return present, *full


def _fold(order: np.ndarray, tracking: Tracking, per_class: int, rows_of: np.ndarray) -> list[tuple[int, list[int]]]:
    """The first ``per_class`` concepts of ``order`` that track none before them, each with those that do
    (``rows_of``: their columns gathered, :meth:`Tracking.gather`)."""
    r = tracking.among(order, rows_of)
    kept: list[tuple[int, list[int]]] = []
    for i, k in enumerate(order):
        owner = next((entry for entry in kept if r[entry[0], i] >= PROXY_CORRELATION), None)
        if owner is not None:
            owner[1].append(int(k))
        elif len(kept) < per_class:
            kept.append((i, []))
    return [(int(order[i]), proxies) for i, proxies in kept]


def audit(features, student: LinearStudent, rows: np.ndarray | None = None, *, influence: np.ndarray | None = None,
          per_class: int = PER_CLASS, examples: int = EXAMPLES) -> AuditReport:
    """Audit the teacher behind ``student`` on a FeatureSet's ``rows`` (a mask or positions; default its
    validation rows, or every row when it has none: pass a balanced test split's FeatureSet to audit there).

    ``influence`` (C, K): what the student uses (default: its weight x the mean standardised presence on the
    images the teacher gives each class, over these rows). Concepts that track each other within classes
    on these rows are folded together. Returns an :class:`AuditReport`, findings best first (at most
    ``per_class`` per class).
    """
    start = time.perf_counter()
    if rows is None:
        rows = features.is_val if features.is_val.any() else np.ones(len(features.is_val), dtype=bool)
    positions = np.nonzero(rows)[0] if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
    if not len(positions):
        raise ConfigError("The audit has no images to look at: pass rows with at least one image.")
    labels = features.labels_as_classes[positions]
    order = np.argsort(labels, kind="stable")  # by label (unknown first): each label's rows one slice
    positions, labels = positions[order], labels[order]
    scores = np.asarray(features.concept_scores[positions])
    teacher_logits = np.asarray(features.teacher_logits[positions])
    x = student.standardise(scores)
    classes = class_of_rows(labels, teacher_logits)
    sums = group_sums(x, classes)
    tracking = Tracking(x, classes, sums)
    teacher_pred = teacher_logits.argmax(1)
    if influence is None:
        influence = class_influence(student.weight, mean_by_class(x, teacher_pred, len(features.class_names)))
    known = labels >= 0
    strongest = np.abs(influence).max(1, keepdims=True)
    share = np.divide(np.clip(influence, 0, None), strongest, out=np.zeros_like(influence), where=strongest > 0)
    if known.sum() >= 2:
        first = int(np.argmax(known))
        found = evidence(x[first:], teacher_logits[first:], labels[first:], sums if known.all() else None)
        score, labelled = found * (1.0 + share), True
        note = (f"Ranked by how the teacher's belief in each class moves with each concept, label held, on "
                f"{int(known.sum())} labelled {'validation ' if np.array_equal(rows, features.is_val) else ''}images, "
                "and by what the student uses.")
    else:
        found, score, labelled = None, share, False
        note = (f"No labels among these {len(positions)} images: ranked by the student's influence only (what the "
                "student, and so the teacher, leans on). Labels would sharpen it: they show where the teacher's "
                "belief moves beyond the label.")
    student_pred = student.logits_of_standardised(x).argmax(1)
    candidates = [order[score[c, order] > 0] for c, order in
                  enumerate(np.argsort(-score, axis=1, kind="stable")[:, :CANDIDATES])]
    union = np.unique(np.concatenate(candidates)).astype(np.int64)
    gathered = tracking.gather(union)  # one pass over the rows for every class's folding
    findings = []
    for c in range(len(features.class_names)):
        rows_of = gathered[np.searchsorted(union, candidates[c])]
        for k, proxies in _fold(candidates[c], tracking, per_class, rows_of):
            findings.append(_finding(features, c, k, proxies, float(score[c, k]),
                                     None if found is None else float(found[c, k]), student, influence,
                                     (positions, scores[:, k], labels, teacher_pred, student_pred), examples))
    findings.sort(key=lambda f: -f.score)
    used = f"{len(positions)} {'validation ' if np.array_equal(rows, features.is_val) else ''}images"
    return AuditReport(findings, labelled, len(positions), used, note, time.perf_counter() - start)


def _finding(features, c: int, k: int, proxies: list[int], score: float, found: float | None,
             student: LinearStudent, influence: np.ndarray, rows: tuple, examples: int) -> Finding:
    """One finding: the figures with and without the concept, and the group its reliance hurts."""
    positions, presence, labels, teacher_pred, student_pred = rows
    present = presence_split(presence)
    mine = labels == c
    concept, name = features.concepts[k], features.class_names[c]
    with_, without = mine & present, mine & ~present
    taken = (labels >= 0) & ~mine & present  # other classes' images with the concept
    missed_rate = _accuracy(teacher_pred[without] == c)
    taken_rate = _accuracy(teacher_pred[taken] != c)
    if taken_rate is not None and (missed_rate is None or taken_rate < missed_rate):
        hurt, hurt_name, right = taken, f"not {name}, with '{concept}'", lambda p: p != c
    else:
        hurt, hurt_name, right = without, f"{name}, without '{concept}'", lambda p: p == c
    order = np.nonzero(hurt)[0]
    order = order[np.argsort(right(teacher_pred[order]), kind="stable")][:examples]  # the teacher's errors first
    return Finding(
        class_name=name, concept=concept, score=score, evidence=found, weight=float(student.weight[c, k]),
        influence=float(influence[c, k]), proxies=[features.concepts[j] for j in proxies],
        n_with=int(with_.sum()), n_without=int(without.sum()),
        teacher_accuracy_with=_accuracy(teacher_pred[with_] == c),
        teacher_accuracy_without=_accuracy(teacher_pred[without] == c),
        student_accuracy_with=_accuracy(student_pred[with_] == c),
        student_accuracy_without=_accuracy(student_pred[without] == c),
        hurt_group=hurt_name, hurt_n=int(hurt.sum()), hurt_teacher_accuracy=_accuracy(right(teacher_pred[hurt])),
        hurt_student_accuracy=_accuracy(right(student_pred[hurt])), hurt_positions=positions[order],
        hurt_image_ids=[int(i) for i in features.image_ids[positions[order]]])


def concept_map(features, position: int, concept: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a concept is present in one image: its presence in each region (R,) and the regions' boxes
    (R, 4), from the kept region embeddings (the whole-image region excluded when there are others)."""
    import torch

    from .concepts.presence import presence_map

    if features.region_embeddings is None:
        raise ConfigError("These features were extracted without their region embeddings, so a concept's heat map "
                          "cannot be drawn: extract with keep_regions=True (CLI: --keep-regions).")
    regions = torch.from_numpy(np.array(features.region_embeddings[position : position + 1]))
    values = presence_map(regions, torch.from_numpy(np.array(features.concept_embeddings[concept])))[0].numpy()
    boxes = np.asarray(features.region_boxes, dtype=np.float64)
    whole = np.all(np.isclose(boxes, [0.0, 0.0, 1.0, 1.0]), axis=1)
    keep = ~whole if (~whole).any() else whole
    return values[keep], boxes[keep]
