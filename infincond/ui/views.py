"""The views: one renderer per group of components that change together (:data:`~.layout.GROUPS`), each
registered in :data:`VIEWS` with what of the workspace it reads (:data:`~.derived.ASPECTS`), each returning
``{component name: value or update}``. An event re-renders the views that read what it changed. No numbers
are computed here: they come from the core, through the workspace (which caches them per student state).

Adding a view takes two edits: its components and group in :mod:`.layout`, and its renderer here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import numpy as np

from ..analysis import class_examples, class_summary, image_report
from ..metrics import percent
from .messages import delta as _delta
from .messages import text as _text
from .pictures import boxed, drawn_once, heated
from .tables import influence_table, plot, table
from .workspace import Workspace

CONTRIBUTION_COLUMNS = ["concept", "presence", "weight", "contribution"]
EDIT_COLUMNS = ["concept", "class", "kind", "weight"]
SUBSET_COLUMNS = ["teacher says", "student says", "images"]
CLASS_COLUMNS = ["class", "images (label)", "teacher predicts", "teacher accuracy"]
GROUP_COLUMNS = ["group", "images", "teacher", "student before", "student now"]
AUDIT_COLUMNS = ["class", "concept", "score", "teacher with / without", "student with / without", "hurts",
                 "tracked by"]
NUMBER, NAME = "quantitative", "nominal"  # a plot's column types
BARS = {"bar": NAME, "class": NAME, "model": NAME, "score": NUMBER}
LOG_POINTS = {"step": NAME, "metric": NAME, "value": NUMBER}
LOG_COLUMNS = ["step", "time", "action", "fidelity", "Δ fidelity", "accuracy", "Δ accuracy", "current"]


@dataclass(frozen=True)
class View:
    """A renderer of one group of components, and the aspects of the workspace it reads."""

    render: Callable[[Workspace], dict]
    reads: frozenset[str]


#: Every view, by its group of components (:data:`~.layout.GROUPS`).
VIEWS: dict[str, View] = {}


def view(group: str, *reads: str) -> Callable:
    """Register the renderer of ``group``, which reads these aspects of the workspace."""
    def register(render: Callable[[Workspace], dict]) -> Callable[[Workspace], dict]:
        VIEWS[group] = View(render, frozenset(reads))
        return render
    return register


# -- 1. configuration ---------------------------------------------------------------------------------
@view("config", "data")
def configuration(ws: Workspace) -> dict:
    """Summary, classes with counts and teacher accuracy, sample images, images that could not be read."""
    if ws.features is None:
        return {"config_md": "Nothing loaded yet: pick a preset or fill the fields, then **Load**.",
                "class_table": table([], CLASS_COLUMNS), "samples_gallery": []}
    f, s = ws.features, ws.settings
    accuracy, classes = class_summary(f)
    where = (f"**Teacher** `{s.teacher}` · **dataset** `{s.dataset}` (split `{ws.source.split}`) · **encoder** "
             f"`{s.encoder}`" if s is not None else f"**Features** `{f.fingerprint}`")
    text = (f"{where}\n\n{len(f.is_val)} images ({int((~f.is_val).sum())} train / {int(f.is_val.sum())} "
            f"validation) · {f.num_classes} classes · {f.num_concepts} concepts · teacher accuracy "
            f"**{percent(accuracy) if accuracy is not None else 'n/a (no labels)'}**")
    failed = f.provenance.get("failed_images") or []
    if failed:
        rows = ", ".join(str(item["image_id"]) for item in failed[:10])
        text += (f"\n\n**{len(failed)} image(s) could not be read and were left out** (dataset rows {rows}"
                 f"{' ...' if len(failed) > 10 else ''}).")
    merged = f.provenance.get("merged_concepts") or []
    if merged:
        shown = ", ".join(f"{_text(gone)} → {_text(kept)}" for kept, gone in merged[:8])
        text += (f"\n\n{len(merged)} spelling(s) of the concepts merged into an earlier one, as the same concept: "
                 f"{shown}{' ...' if len(merged) > 8 else ''}.")
    classes_shown = table([{"class": r["class"], "images (label)": r["labelled"], "teacher predicts": r["predicted"],
                           "teacher accuracy": percent(r["accuracy"])} for r in classes], CLASS_COLUMNS)
    examples = class_examples(f)
    images = _image_files(ws, [p for p, _ in examples]) if ws.source is not None else []
    samples = [(image, f.class_names[c]) for image, (_, c) in zip(images, examples, strict=False)]
    return {"config_md": text, "class_table": classes_shown, "samples_gallery": samples}


def _image_files(ws: Workspace, positions) -> list:
    """The dataset images at FeatureSet positions as PNG files written once and shared by every session.
    Gradio writes a PIL image it is given into its cache on every event, in place: a session returning the
    same image while another's client downloads it cut that download short (seen with eight sessions)."""
    positions = [int(p) for p in positions]
    fingerprint = ws.features.fingerprint
    return drawn_once(f"{fingerprint}-images" if fingerprint else "", [str(p) for p in positions],
                      lambda missing: ws.images_of([positions[i] for i in missing]), lambda _, image: image)


# -- 2. student performance ---------------------------------------------------------------------------
@view("sweep", "student")
def sweep(ws: Workspace) -> dict:
    """The fidelity-vs-NEC curve and the students to pick from (the distilled sweep: edits do not move it)."""
    curve = plot([{"NEC": float(p.metrics.nec), "fidelity": p.metrics.fidelity, "target": p.nec_target}
                  for p in ws.sweep], {"NEC": NUMBER, "fidelity": NUMBER, "target": NUMBER}, "line")
    return {"pick_nec": gr.update(choices=[p.nec_target for p in ws.sweep], value=ws.nec), "nec_curve": curve}


@view("perf", "student", "weights", "groups")
def performance(ws: Workspace) -> dict:
    """Headline metrics and the worst group, per-class teacher-vs-student bars, disagreement subsets, and the
    groups (their choice and their accuracies)."""
    out = _groups(ws)
    if ws.session is None:
        return out | {"perf_md": "No student yet: **Distil**.", "class_bars": plot([], BARS, "bar"),
                      "disagreements": table([], SUBSET_COLUMNS)}
    m = ws.session.metrics
    text = (f"**Fidelity** {percent(m['fidelity'])} · **student accuracy** {percent(m['accuracy'])} · "
            f"**teacher accuracy** {percent(m['teacher_accuracy'])} · NEC {m['nec']:.1f} · "
            f"KL {m['kl']:.3f} · on {m['n_images']} validation images")
    g = m.get("groups")
    if g and g["worst_group"] is not None:
        text += (f"\n\n**Worst group** (class x {_text(g['attribute'])}): student "
                 f"{percent(g['worst_group_accuracy'])} on {_text(g['worst_group'])} · teacher "
                 f"{percent(g['teacher_worst_group_accuracy'])} on {_text(g['teacher_worst_group'])}")
    full = ws.evaluation()
    bars = []
    use_labels = full.n_labelled > 0
    for c, name in enumerate(full.class_names):
        teacher = full.teacher_class_accuracy[c] if use_labels else 1.0
        student = full.class_accuracy[c] if use_labels else full.agreement[c]
        # Native plots stack bars of one x; one bar per (class, model) puts them side by side instead.
        bars += [{"bar": f"{name} · {model}", "class": name, "model": model, "score": float(np.nan_to_num(score))}
                 for model, score in (("teacher", teacher), ("student", student))]
    subsets = table([{"teacher says": g["teacher"], "student says": g["student"], "images": len(g["positions"])}
                     for g in ws.disagreement_subsets()], SUBSET_COLUMNS)
    return out | {"perf_md": text, "class_bars": plot(bars, BARS, "bar"), "disagreements": subsets}


def _groups(ws: Workspace) -> dict:
    """What groups can be, the groups chosen, and per group (worst first) the teacher's accuracy and the
    student's before and after the last action."""
    choices = ws.group_choices()
    value = (ws.settings.group_column if ws.settings is not None else "") or None
    if value and value not in choices:
        choices = [value, *choices]
    picker = gr.update(choices=choices, value=value)
    if ws.session is None or not ws.session.metrics.get("groups"):
        return {"group_by": picker, "groups_table": table([], GROUP_COLUMNS)}
    after = ws.session.metrics["groups"]["per_group"]
    last = next((e for e in reversed(ws.session.log) if e.state == ws.session.cursor), ws.session.log[0])
    before = ((last.metrics_before or last.metrics_after).get("groups") or {}).get("per_group", {})
    rows = [{"group": name, "images": g["n"], "teacher": g["teacher_accuracy"],
             "student before": (before.get(name) or {}).get("accuracy"), "student now": g["accuracy"]}
            for name, g in after.items() if g["n"]]
    rows.sort(key=lambda r: (r["student now"] if r["student now"] is not None else 2.0, r["group"]))
    shown = [{**r, **{k: percent(r[k]) for k in GROUP_COLUMNS[2:]}} for r in rows]
    return {"group_by": picker, "groups_table": table(shown, GROUP_COLUMNS)}


@view("subset", "student", "weights", "subset")
def subset_gallery(ws: Workspace) -> dict:
    positions = ws.subset_positions()
    if positions is None or ws.source is None:
        return {"subset_images": []}
    positions = positions[:24]
    return {"subset_images": [(image, f"#{int(ws.features.image_ids[p])}")
                              for image, p in zip(_image_files(ws, positions), positions, strict=True)]}


# -- shortcuts: the audit -----------------------------------------------------------------------------
@view("audit", "student", "weights")
def shortcuts(ws: Workspace) -> dict:
    """The audit's note and its findings, best first."""
    if ws.session is None:
        return {"audit_md": "Distil a student to audit its teacher.",
                "audit_table": table([], AUDIT_COLUMNS)}
    report = ws.audit()
    rows = [{"class": f.class_name, "concept": f.concept, "score": round(f.score, 2),
             "teacher with / without": f"{percent(f.teacher_accuracy_with)} / {percent(f.teacher_accuracy_without)}",
             "student with / without": f"{percent(f.student_accuracy_with)} / {percent(f.student_accuracy_without)}",
             "hurts": f"{f.hurt_group} ({f.hurt_n}: teacher {percent(f.hurt_teacher_accuracy)}, student "
                      f"{percent(f.hurt_student_accuracy)})",
             "tracked by": ", ".join(f.proxies[:3]) + (" ..." if len(f.proxies) > 3 else "")}
            for f in report.findings]
    return {"audit_md": _text(report.note), "audit_table": table(rows, AUDIT_COLUMNS)}


@view("audit_images", "finding")
def hurt_group(ws: Workspace) -> dict:
    """The images of the group the opened finding (else the first) hurts, the teacher's errors first, each
    with the concept's presence heat map (drawn once per image and concept)."""
    finding = ws.shown_finding() if ws.session is not None else None
    if finding is None:
        return {"audit_images_md": "", "audit_gallery": []}
    text = (f"**{_text(finding.hurt_group)}**: the images the teacher's reliance on '{_text(finding.concept)}' for "
            f"{_text(finding.class_name)} hurts (its errors first); red = where the concept is. Select a finding, "
            "then **Remove** in Tuning: its proxies are held at 0 with it.")
    f = ws.features
    if ws.source is None or f.region_embeddings is None:
        return {"audit_images_md": text, "audit_gallery": []}
    k, positions = ws.session.concept_id(finding.concept), [int(p) for p in finding.hurt_positions]
    maps = {}

    def draw(i: int, image):
        if not maps:
            maps.update(zip(positions, ws.concept_maps(positions, k), strict=True))
        return heated(image, *maps[positions[i]])

    pictures = drawn_once(f"{f.fingerprint}-heat" if f.fingerprint else "", [f"{p}-{k}" for p in positions],
                          lambda missing: ws.images_of([positions[i] for i in missing]), draw)
    captions = [f"teacher: {f.class_names[int(f.teacher_logits[p].argmax())]}" for p in positions]
    return {"audit_images_md": text, "audit_gallery": list(zip(pictures, captions, strict=True))}


# -- 3. concept-class heatmap -------------------------------------------------------------------------
@view("heat", "student", "weights", "selection", "heatmap", "concepts")
def heatmap(ws: Workspace) -> dict:
    """A styled influence table (concepts x classes) of the top concepts: blue for positive, red for
    negative, the selected cell outlined."""
    if ws.session is None:
        return {"heat": table([], ["concept"])}
    order = ws.heatmap_order()
    selected = next((i for i, k in enumerate(order) if k == ws.concept), None)
    return {"heat": influence_table([ws.session.concepts[k] for k in order], ws.session.class_names,
                                    ws.influence()[:, order].T, selected, ws.class_id)}


# -- 4. images ----------------------------------------------------------------------------------------
@view("images", "student", "concept", "concepts")
def concept_images(ws: Workspace) -> dict:
    """The images where the selected concept is most present, its region outlined."""
    if ws.session is None or ws.concept is None:
        return {"images_md": "Select a concept in the heatmap.", "concept_gallery": []}
    k, f = ws.concept, ws.features
    title = f"Where **{_text(ws.session.concepts[k])}** is most present (its best region outlined)"
    if ws.source is None:
        return {"images_md": title + " (these features came without their images)", "concept_gallery": []}
    positions = ws.concept_images(k)
    regions = [tuple(f.region_boxes[f.best_region[p, k]]) for p in positions]
    names = [f"{int(p)}-3-{'-'.join(f'{v:.5f}' for v in region)}" for p, region in zip(positions, regions, strict=True)]
    pictures = drawn_once(f.fingerprint, names, lambda missing: ws.images_of([positions[i] for i in missing]),
                          lambda i, image: boxed(image, regions[i]))
    return {"images_md": title, "concept_gallery": [(picture, f"{f.concept_scores[p, k]:.2f}")
                                                    for picture, p in zip(pictures, positions, strict=True)]}


@view("detail", "student", "weights", "image")
def image_detail(ws: Workspace) -> dict:
    """One image: teacher and student predictions and the top contributing concepts."""
    if ws.session is None or ws.image is None:
        return {"detail_image": None,
                "detail_md": "Click an image to see why the student and the teacher classify it as they do.",
                "detail_table": table([], CONTRIBUTION_COLUMNS)}
    f = ws.features
    report = image_report(f, ws.session.student, ws.image)
    picture = None
    if ws.source is not None and report.contributions:  # a file drawn once (see _image_files)
        region = report.contributions[0].region
        name = f"{report.position}-" + "-".join(f"{v:.4f}" for v in region)
        picture = drawn_once(f"{f.fingerprint}-detail" if f.fingerprint else "", [name],
                             lambda _: [ws.image_of(report.position)],
                             lambda _, image: boxed(image, region, scale=4))[0]
    elif ws.source is not None:
        picture = _image_files(ws, [report.position])[0]
    text = (f"Image #{int(f.image_ids[report.position])}: teacher says **{f.class_names[report.teacher_class]}**, "
            f"student says **{f.class_names[report.student_class]}**"
            + (f", label **{f.class_names[report.label]}**" if report.label >= 0 else ""))
    contributions = table([{"concept": c.concept, "presence": round(c.presence, 3), "weight": round(c.weight, 3),
                           "contribution": round(c.contribution, 3)} for c in report.contributions],
                          CONTRIBUTION_COLUMNS)
    return {"detail_image": picture, "detail_md": text, "detail_table": contributions}


# -- 5. tuning ----------------------------------------------------------------------------------------
@view("tuning", "student", "weights", "selection", "concepts")
def tuning(ws: Workspace) -> dict:
    """The selected weight and its constraint, the proxies a remove of it would hold, the constraints in force."""
    if ws.session is None or ws.concept is None or ws.class_id is None:
        return {"selection_md": "Select a cell of the heatmap to tune a concept's influence on a class.",
                "proxies": gr.update(choices=[], value=[]), "edits": table([], EDIT_COLUMNS)}
    s = ws.session
    info = s.constraint(s.concepts[ws.concept], s.class_names[ws.class_id])
    bounds = "" if info["kind"] == "free" else f", {info['kind']} in [{info['lower']:.3g}, {info['upper']:.3g}]"
    text = (f"Selected: **{_text(s.concepts[ws.concept])}** for class **{_text(s.class_names[ws.class_id])}**"
            f" · weight {info['weight']:+.3f}{bounds} · label blend alpha {s.label_weight:g}")
    edits = table([{"concept": e["concept"], "class": e["class_name"], "kind": e["kind"],
                    "weight": round(e["weight"], 4)} for e in s.edits()], EDIT_COLUMNS)
    return {"selection_md": text, "proxies": gr.update(choices=[name for name, _ in ws.proxies()], value=[]),
            "edits": edits}


# -- 6. provenance ------------------------------------------------------------------------------------
@view("provenance", "student", "weights", "groups")
def provenance(ws: Workspace) -> dict:
    """The log as a table, and the metrics after each step (long format, for a line plot whose x axis lists
    the steps as categories, in order, so that it never shows fractional steps)."""
    if ws.session is None:
        return {"log_plot": gr.update(value=plot([], LOG_POINTS, "line"), sort=None),
                "log_table": table([], LOG_COLUMNS)}
    log = ws.session.log
    current = next(e.step for e in reversed(log) if e.state == ws.session.cursor)  # the step that led here last
    rows, points = [], []
    for e in log:
        d = e.delta
        rows.append({"step": e.step, "time": e.time[11:19], "action": e.summary,
                     "fidelity": percent(e.metrics_after["fidelity"]), "Δ fidelity": _delta(d.get("fidelity")),
                     "accuracy": percent(e.metrics_after["accuracy"]), "Δ accuracy": _delta(d.get("accuracy")),
                     "current": "●" if e.step == current else ""})
        points += [{"step": str(e.step), "metric": metric, "value": e.metrics_after[metric]}
                   for metric in ("fidelity", "accuracy") if e.metrics_after[metric] is not None]
    return {"log_plot": gr.update(value=plot(points, LOG_POINTS, "line"), sort=[str(e.step) for e in log]),
            "log_table": table(rows, LOG_COLUMNS)}


# -- the buttons: open when their step can be taken (three groups: what moves each differs) -----------------
@view("controls", "data", "student", "concepts")
def controls(ws: Workspace) -> dict:
    has_features, tuned = ws.features is not None, ws.session is not None
    on = {"distill_btn": has_features, "alpha_btn": tuned, "jump_btn": tuned, "export_btn": tuned,
          "import_btn": has_features, "save_btn": tuned, "zip_btn": tuned, "push_btn": tuned,
          "concept_btn": tuned and ws.can_add_concepts}
    return {button: gr.update(interactive=value) for button, value in on.items()}


@view("edit_controls", "student", "selection")
def edit_controls(ws: Workspace) -> dict:
    """Preview and Apply: open once a cell is selected (their own group: a select moves only them)."""
    selected = ws.session is not None and ws.concept is not None and ws.class_id is not None
    return {"preview_btn": gr.update(interactive=selected), "apply_btn": gr.update(interactive=selected)}


@view("steps", "student", "weights")
def steps(ws: Workspace) -> dict:
    """Undo and redo: open when there is a step to undo or redo (their own group: every action moves them)."""
    session = ws.session
    return {"undo_btn": gr.update(interactive=session is not None and session.can_undo),
            "redo_btn": gr.update(interactive=session is not None and session.can_redo)}
