"""The six views' contents, rendered from a :class:`Workspace` into plain values (Markdown, DataFrames,
images) for Gradio components, one function per group of components that change together. No numbers
are computed here: they come from the core, through the workspace (which caches them per student state)."""

from __future__ import annotations

import atexit
import functools
import html
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..analysis import class_examples, class_summary, image_report
from ..concepts.presence import box_on_image
from ..errors import StorageError
from ..metrics import percent
from ..storage import atomic_write
from ..tuning import LogEntry, Preview
from .workspace import Workspace

HIGHLIGHT = (255, 196, 0)
CONTRIBUTION_COLUMNS = ["concept", "presence", "weight", "contribution"]
EDIT_COLUMNS = ["concept", "class", "kind", "weight"]
SUBSET_COLUMNS = ["teacher says", "student says", "images"]


def _delta(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f} pts"


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _boxed(image: Image.Image, region: tuple[float, float, float, float], scale: int = 3) -> Image.Image:
    """The image enlarged ``scale`` times with a region (fractions of the encoder's square view) outlined."""
    image = image.convert("RGB")
    big = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    x0, y0, x1, y1 = box_on_image(np.asarray(region), big.size)
    ImageDraw.Draw(big).rectangle([x0, y0, x1 - 1, y1 - 1], outline=HIGHLIGHT, width=max(2, scale))
    return big


# -- 1. configuration ---------------------------------------------------------------------------------
def configuration(ws: Workspace) -> tuple[str, pd.DataFrame, list]:
    """Summary, classes with counts and teacher accuracy, sample images."""
    if ws.features is None:
        return "Nothing loaded yet: pick a preset or fill the fields, then **Load**.", pd.DataFrame(), []
    f, s = ws.features, ws.settings
    accuracy, classes = class_summary(f)
    where = (f"**Teacher** `{s.teacher}` · **dataset** `{s.dataset}` (split `{ws.source.split}`) · **encoder** "
             f"`{s.encoder}`" if s is not None else f"**Features** `{f.fingerprint}`")
    text = (f"{where}\n\n{len(f.is_val)} images ({int((~f.is_val).sum())} train / {int(f.is_val.sum())} validation) · "
            f"{f.num_classes} classes · {f.num_concepts} concepts · teacher accuracy "
            f"**{percent(accuracy) if accuracy is not None else 'n/a (no labels)'}**")
    table = pd.DataFrame([{"class": r["class"], "images (label)": r["labelled"], "teacher predicts": r["predicted"],
                           "teacher accuracy": percent(r["accuracy"])} for r in classes])
    examples = class_examples(f)
    images = ws.images_of([p for p, _ in examples]) or []
    samples = [(image, f.class_names[c]) for image, (_, c) in zip(images, examples, strict=False)]
    return text, table, samples


# -- 2. student performance ---------------------------------------------------------------------------
def performance(ws: Workspace) -> tuple[str, pd.DataFrame, pd.DataFrame, list[int], int | None, pd.DataFrame]:
    """Headline metrics, per-class teacher-vs-student bars, fidelity-vs-NEC curve, the students to pick
    from and the one picked, disagreement subsets."""
    if ws.session is None:
        return ("No student yet: **Distil**.", pd.DataFrame(), pd.DataFrame(), [p.nec_target for p in ws.sweep],
                ws.nec, pd.DataFrame(columns=SUBSET_COLUMNS))
    m = ws.session.metrics
    text = (f"**Fidelity** {percent(m['fidelity'])} · **student accuracy** {percent(m['accuracy'])} · "
            f"**teacher accuracy** {percent(m['teacher_accuracy'])} · NEC {m['nec']:.1f} · "
            f"KL {m['kl']:.3f} · on {m['n_images']} validation images")
    g = m.get("groups")
    if g and g["worst_group"] is not None:
        text += (f"\n\n**Worst group** (class x {_text(g['attribute'])}): student {percent(g['worst_group_accuracy'])} "
                 f"on {_text(g['worst_group'])} · teacher {percent(g['teacher_worst_group_accuracy'])} on "
                 f"{_text(g['teacher_worst_group'])}")
    full = ws.evaluation()
    bars = []
    use_labels = full.n_labelled > 0
    for c, name in enumerate(full.class_names):
        teacher = full.teacher_class_accuracy[c] if use_labels else 1.0
        student = full.class_accuracy[c] if use_labels else full.agreement[c]
        # Native plots stack bars of one x; one bar per (class, model) puts them side by side instead.
        bars += [{"bar": f"{name} · teacher", "class": name, "model": "teacher", "score": float(np.nan_to_num(teacher))},
                 {"bar": f"{name} · student", "class": name, "model": "student", "score": float(np.nan_to_num(student))}]
    curve = pd.DataFrame([{"NEC": float(p.metrics.nec), "fidelity": p.metrics.fidelity, "target": p.nec_target}
                          for p in ws.sweep])
    table = pd.DataFrame([{"teacher says": g["teacher"], "student says": g["student"], "images": len(g["positions"])}
                          for g in ws.disagreement_subsets()], columns=SUBSET_COLUMNS)
    return text, pd.DataFrame(bars), curve, [p.nec_target for p in ws.sweep], ws.nec, table


GROUP_COLUMNS = ["group", "images", "teacher", "student before", "student now"]


def groups(ws: Workspace) -> tuple[list[str], str | None, pd.DataFrame]:
    """What groups can be, the groups chosen, and per group (worst first) the teacher's accuracy and the
    student's before and after the last action."""
    choices = ws.group_choices()
    value = ws.settings.group_column if ws.settings is not None else None
    if value and value not in choices:
        choices = [value, *choices]
    if ws.session is None or not (ws.session.metrics.get("groups")):
        return choices, value or None, pd.DataFrame(columns=GROUP_COLUMNS)
    after = ws.session.metrics["groups"]["per_group"]
    last = next((e for e in reversed(ws.session.log) if e.state == ws.session.cursor), ws.session.log[0])
    before = ((last.metrics_before or last.metrics_after).get("groups") or {}).get("per_group", {})
    rows = [{"group": name, "images": g["n"], "teacher": g["teacher_accuracy"],
             "student before": (before.get(name) or {}).get("accuracy"), "student now": g["accuracy"]}
            for name, g in after.items() if g["n"]]
    rows.sort(key=lambda r: (r["student now"] if r["student now"] is not None else 2.0, r["group"]))
    table = pd.DataFrame([{**r, **{k: percent(r[k]) for k in GROUP_COLUMNS[2:]}} for r in rows], columns=GROUP_COLUMNS)
    return choices, value or None, table


def subset_gallery(ws: Workspace) -> list:
    positions = ws.subset_positions()
    if positions is None or ws.source is None:
        return []
    positions = positions[:24]
    return [(image, f"#{int(ws.features.image_ids[p])}") for image, p in zip(ws.images_of(positions), positions,
                                                                             strict=True)]


# -- 3. concept-class heatmap -------------------------------------------------------------------------
def heatmap(ws: Workspace, n: int = 20, sort: str = "any class"):
    """A styled influence table (concepts x classes) of the top ``n`` concepts: blue for positive, red for
    negative, the selected cell outlined."""
    if ws.session is None:
        return pd.DataFrame({"concept": []})
    order = ws.heatmap_order(n, sort)
    values = ws.influence()[:, order].T.round(3) + 0.0  # + 0.0: no "-0.000"
    frame = pd.DataFrame(values, columns=ws.session.class_names)
    frame.insert(0, "concept", [ws.session.concepts[k] for k in order])
    scale = float(np.abs(values).max()) if values.size else 1.0

    def colour(column: pd.Series) -> list[str]:
        if column.name == "concept":
            return ["font-weight: 600" if order[i] == ws.concept else "" for i in range(len(column))]
        c = ws.session.class_names.index(column.name)
        out = []
        for i, v in enumerate(column):
            alpha = min(abs(float(v)) / (scale or 1.0), 1.0) * 0.85
            rgb = "37, 99, 235" if v > 0 else "220, 38, 38"
            style = f"background-color: rgba({rgb}, {alpha:.2f})" if v != 0 else "color: #aaa"
            if order[i] == ws.concept and c == ws.class_id:
                style += "; outline: 3px solid #f59e0b; font-weight: 700"
            out.append(style)
        return out

    return frame.style.apply(colour).format(precision=3, subset=list(frame.columns[1:]))


# -- shortcuts: the audit ----------------------------------------------------------------------------
AUDIT_COLUMNS = ["class", "concept", "score", "teacher with / without", "student with / without", "hurts",
                 "tracked by"]
HEAT = (239, 68, 68)


def shortcuts(ws: Workspace) -> tuple[str, pd.DataFrame, list]:
    """The audit's note and findings, and the images of the group the opened finding (else the first)
    hurts, each with the concept's presence heat map."""
    if ws.session is None:
        return "Distil a student to audit its teacher.", pd.DataFrame(columns=AUDIT_COLUMNS), []
    report = ws.audit()
    rows = [{"class": f.class_name, "concept": f.concept, "score": round(f.score, 2),
             "teacher with / without": f"{percent(f.teacher_accuracy_with)} / {percent(f.teacher_accuracy_without)}",
             "student with / without": f"{percent(f.student_accuracy_with)} / {percent(f.student_accuracy_without)}",
             "hurts": f"{f.hurt_group} ({f.hurt_n}: teacher {percent(f.hurt_teacher_accuracy)}, student "
                      f"{percent(f.hurt_student_accuracy)})",
             "tracked by": ", ".join(f.proxies[:3]) + (" ..." if len(f.proxies) > 3 else "")}
            for f in report.findings]
    finding = ws.opened_finding() or (report.findings[0] if report.findings else None)
    text = _text(report.note)
    gallery = []
    if finding is not None:
        text += (f"\n\nShown: **{_text(finding.hurt_group)}**, the images the teacher's reliance on "
                 f"'{_text(finding.concept)}' for {_text(finding.class_name)} hurts (its errors first); red = where "
                 "the concept is. Select a row, then **Remove** in Tuning: its proxies are held at 0 with it.")
        gallery = _heat_thumbnails(ws, finding)
    return text, pd.DataFrame(rows, columns=AUDIT_COLUMNS), gallery


def _heat_thumbnails(ws: Workspace, finding) -> list:
    """The finding's images with the concept's presence heat map over each (drawn once per image and
    concept, as the concept gallery's thumbnails are), captioned with what the teacher and student say."""
    if ws.source is None or ws.features.region_embeddings is None:
        return []
    f, k = ws.features, ws.session.concept_id(finding.concept)
    positions = [int(p) for p in finding.hurt_positions]
    folder = _thumbnail_folder() / f"{f.fingerprint}-heat"
    paths = [folder / f"{p}-{k}.png" for p in positions]
    out: list = [str(path) if f.fingerprint and path.exists() else None for path in paths]
    missing = [i for i, item in enumerate(out) if item is None]
    if missing:
        maps = ws.concept_maps([positions[i] for i in missing], k)
        for i, image, (values, boxes) in zip(missing, ws.images_of([positions[i] for i in missing]), maps, strict=True):
            heated = _heat(image, values, boxes)
            out[i] = _written(paths[i], heated) if f.fingerprint else heated
    student = ws.session.student.logits(f.concept_scores[positions]).argmax(1)
    return [(thumb, f"teacher: {f.class_names[int(f.teacher_logits[p].argmax())]} · student: {f.class_names[s]}")
            for thumb, p, s in zip(out, positions, student, strict=True)]


def _heat(image: Image.Image, values: np.ndarray, boxes: np.ndarray, scale: int = 3) -> Image.Image:
    """The image enlarged ``scale`` times with a concept's presence per region (boxes in fractions of the
    encoder's square view) laid over it in red: each region painted with its value (the largest where
    regions overlap), smoothed, relative to the image's strongest region, at most 65% opaque."""
    image = image.convert("RGB")
    big = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    side = 64
    grid = np.zeros((side, side), dtype=np.float32)
    for value, box in zip(values, boxes, strict=True):
        x0, y0, x1, y1 = (int(round(v * side)) for v in box)
        grid[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = np.maximum(grid[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)], value)
    top = float(grid.max())
    heat = Image.fromarray(np.uint8(255 * grid / top) if top > 0 else np.zeros((side, side), np.uint8), "L")
    x0, y0, x1, y1 = box_on_image(np.array([0.0, 0.0, 1.0, 1.0]), big.size)
    heat = heat.resize((int(x1 - x0), int(y1 - y0)), Image.BILINEAR)
    alpha = Image.new("L", big.size, 0)
    alpha.paste(heat.point(lambda v: int(v * 0.65)), (int(x0), int(y0)))
    return Image.composite(Image.new("RGB", big.size, HEAT), big, alpha)


# -- 4. images ----------------------------------------------------------------------------------------
def concept_images(ws: Workspace) -> tuple[str, list]:
    """The images where the selected concept is most present, its region outlined."""
    if ws.session is None or ws.concept is None:
        return "Select a concept in the heatmap.", []
    k, f = ws.concept, ws.features
    title = f"Where **{_text(ws.session.concepts[k])}** is most present (its best region outlined)"
    if ws.source is None:
        return title + " (these features came without their images)", []
    positions = ws.concept_images(k)
    thumbnails = _thumbnails(ws, positions, [tuple(f.region_boxes[f.best_region[p, k]]) for p in positions])
    return title, [(thumb, f"{f.concept_scores[p, k]:.2f}") for thumb, p in zip(thumbnails, positions, strict=True)]


def _thumbnails(ws: Workspace, positions, regions: list[tuple[float, ...]], scale: int = 3) -> list:
    """The images at ``positions``, each with its region outlined (:func:`_boxed`), as PNG files drawn once
    for every session (Gradio sends a file as it is, where it would encode a PIL image again on every
    event); the ones not drawn yet are read in one go. A PIL image stands in where no file can be written."""
    fingerprint = ws.features.fingerprint
    paths = [_thumbnail_folder() / fingerprint / f"{int(p)}-{scale}-{'-'.join(f'{v:.5f}' for v in region)}.png"
             for p, region in zip(positions, regions, strict=True)]
    out: list = [str(path) if fingerprint and path.exists() else None for path in paths]
    missing = [i for i, item in enumerate(out) if item is None]
    for i, image in zip(missing, ws.images_of([positions[i] for i in missing]), strict=True):
        boxed = _boxed(image, regions[i], scale)
        out[i] = _written(paths[i], boxed) if fingerprint else boxed
    return out


def _written(path: Path, image: Image.Image) -> str | Image.Image:
    """``image`` saved as a PNG at ``path`` (atomically: a concurrent session never reads half a file), or
    the image itself where the file cannot be written (a full or read-only temporary folder)."""
    try:
        atomic_write(path, lambda handle: image.save(handle, format="PNG", compress_level=1), durable=False)
    except StorageError:
        return image
    return str(path)


@functools.cache
def _thumbnail_folder() -> Path:
    """This process's own thumbnail folder (private, made once, under the temporary folder Gradio serves
    from): no other user's files, and nothing drawn by an earlier version of this code."""
    folder = Path(tempfile.mkdtemp(prefix="infincond-thumbnails-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def image_detail(ws: Workspace) -> tuple[Image.Image | None, str, pd.DataFrame]:
    """One image: teacher and student predictions and the top contributing concepts."""
    if ws.session is None or ws.image is None:
        return (None, "Click an image to see why the student and the teacher classify it as they do.",
                pd.DataFrame(columns=CONTRIBUTION_COLUMNS))
    f = ws.features
    report = image_report(f, ws.session.student, ws.image)
    picture = ws.image_of(report.position)
    if picture is not None and report.contributions:
        picture = _boxed(picture, report.contributions[0].region, scale=4)
    text = (f"Image #{int(f.image_ids[report.position])}: teacher says **{f.class_names[report.teacher_class]}**, "
            f"student says **{f.class_names[report.student_class]}**"
            + (f", label **{f.class_names[report.label]}**" if report.label >= 0 else ""))
    table = pd.DataFrame([{"concept": c.concept, "presence": round(c.presence, 3), "weight": round(c.weight, 3),
                           "contribution": round(c.contribution, 3)} for c in report.contributions],
                         columns=CONTRIBUTION_COLUMNS)
    return picture, text, table


# -- 5. tuning ----------------------------------------------------------------------------------------
def proxies(ws: Workspace) -> tuple[list[str], list[str]]:
    """The selected concept's proxies (what a remove holds), none released."""
    if ws.session is None or ws.concept is None or ws.class_id is None:
        return [], []
    return [name for name, _ in ws.proxies()], []


def selection(ws: Workspace) -> str:
    if ws.session is None or ws.concept is None or ws.class_id is None:
        return "Select a cell of the heatmap to tune a concept's influence on a class."
    s = ws.session
    info = s.constraint(s.concepts[ws.concept], s.class_names[ws.class_id])
    bounds = "" if info["kind"] == "free" else f", {info['kind']} in [{info['lower']:.3g}, {info['upper']:.3g}]"
    return (f"Selected: **{_text(s.concepts[ws.concept])}** for class **{_text(s.class_names[ws.class_id])}**"
            f" · weight {info['weight']:+.3f}{bounds} · label blend alpha {s.label_weight:g}")


def edits_table(ws: Workspace) -> pd.DataFrame:
    if ws.session is None:
        return pd.DataFrame(columns=EDIT_COLUMNS)
    return pd.DataFrame([{"concept": e["concept"], "class": e["class_name"], "kind": e["kind"],
                          "weight": round(e["weight"], 4)} for e in ws.session.edits()], columns=EDIT_COLUMNS)


def _held_and_rose(held: list[dict], rose: list[dict]) -> str:
    """The proxies a remove holds, and the proxy report: the weights that rose most, and what they track."""
    out = ""
    used = [h for h in held if h["before"] != 0]
    if held:
        unused = len(held) - len(used)
        out += (f"\n\nholds at 0 {len(held)} prox{'y' if len(held) == 1 else 'ies'} of '{_text(held[0]['tracks'])}': "
                + ", ".join(f"{_text(h['concept'])} (was {h['before']:+.2f})" for h in used)
                + (f"{', and ' if used else ''}{unused} the class does not use" if unused else ""))
    if rose:
        parts = [f"{_text(r['concept'])} {r['before']:+.2f} -> {r['after']:+.2f}"
                 + (f" (**tracks {_text(r['tracks'])}**)" if r["tracks"] else "") for r in rose]
        out += f"\n\nrose most for {_text(rose[0]['class_name'])}: " + ", ".join(parts)
    return out


def _worst(d: dict, before: dict, after: dict) -> str:
    g_before, g_after = before.get("groups") or {}, after.get("groups") or {}
    if g_after.get("worst_group_accuracy") is None:
        return ""
    return (f" · worst group {percent(g_before.get('worst_group_accuracy'))} -> "
            f"{percent(g_after['worst_group_accuracy'])} ({_delta(d.get('worst_group_accuracy'))})")


def preview_text(preview: Preview) -> str:
    d, before, after = preview.delta, preview.metrics_before, preview.metrics_after
    changed = ", ".join(f"{c['class_name']}: {c['before']:+.3f} -> {c['after']:+.3f}" for c in preview.changes)
    worst = sorted(((v["accuracy"] if v["accuracy"] is not None else v["agreement"] or 0.0, name)
                    for name, v in d["per_class"].items()), key=lambda x: x[0])
    per_class = ", ".join(f"{name} {_delta(v)}" for v, name in worst[:2] + worst[-2:])
    how = (f"refitted in {preview.seconds:.2f} s: what Apply gives" if preview.refitted
           else "the other weights held; refitting...")
    return (f"**What if: {_text(preview.edit.describe())}** ({how})\n\n"
            f"weight {changed}\n\nfidelity {percent(before['fidelity'])} -> {percent(after['fidelity'])} "
            f"({_delta(d['fidelity'])}) · accuracy {percent(before['accuracy'])} -> {percent(after['accuracy'])} "
            f"({_delta(d['accuracy'])}){_worst(d, before, after)}\n\nper class: {per_class}"
            f"{_held_and_rose(preview.held, preview.rose)}")


def entry_text(entry: LogEntry) -> str:
    """What an applied action did: its summary and metric changes."""
    d, after = entry.delta, entry.metrics_after
    refit = f" (refitted in {entry.refit['seconds']:.2f} s)" if entry.refit else ""
    if entry.refit and not entry.refit.get("converged", True):
        refit = refit[:-1] + ", stopped at the solver's iteration limit)"
    return (f"**Step {entry.step}: {_text(entry.summary)}**{refit} · fidelity {percent(after['fidelity'])} "
            f"({_delta(d.get('fidelity'))}) · accuracy {percent(after['accuracy'])} ({_delta(d.get('accuracy'))})"
            f"{_worst(d, entry.metrics_before or {}, after)}{_held_and_rose(entry.held, entry.rose)}")


# -- 6. provenance ------------------------------------------------------------------------------------
def provenance(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The log as a table, the metrics after each step (long format, for a line plot whose x axis lists
    the steps as categories, in order, so that it never shows fractional steps), and that order."""
    if ws.session is None:
        return pd.DataFrame(), pd.DataFrame(columns=["step", "metric", "value"]), []
    log = ws.session.log
    current = next(e.step for e in reversed(log) if e.state == ws.session.cursor)  # the step that led here last
    rows, points = [], []
    for e in log:
        d = e.delta
        rows.append({"step": e.step, "time": e.time[11:19], "action": e.summary,
                     "fidelity": percent(e.metrics_after["fidelity"]), "Δ fidelity": _delta(d.get("fidelity")),
                     "accuracy": percent(e.metrics_after["accuracy"]), "Δ accuracy": _delta(d.get("accuracy")),
                     "current": "●" if e.step == current else ""})
        points.append({"step": str(e.step), "metric": "fidelity", "value": e.metrics_after["fidelity"]})
        if e.metrics_after["accuracy"] is not None:
            points.append({"step": str(e.step), "metric": "accuracy", "value": e.metrics_after["accuracy"]})
    return pd.DataFrame(rows), pd.DataFrame(points), [str(e.step) for e in log]
