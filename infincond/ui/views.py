"""The six views' contents, rendered from a :class:`Workspace` into plain values (Markdown, DataFrames,
images) for Gradio components. No model code here: the numbers come from the core."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..analysis import image_contributions, images_with_concept
from ..concepts.presence import box_on_image
from ..tuning import LogEntry, Preview
from .workspace import CONCEPT_IMAGES, Workspace

HIGHLIGHT = (255, 196, 0)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.1f}%"


def _delta(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f} pts"


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
    teacher_pred = f.teacher_logits.argmax(1)
    labels = f.labels_as_classes
    known = labels >= 0
    acc = f"{100 * np.mean(teacher_pred[known] == labels[known]):.1f}%" if known.any() else "n/a (no labels)"
    text = (f"**Teacher** `{s.teacher}` · **dataset** `{s.dataset}` (split `{ws.source.split}`) · "
            f"**encoder** `{s.encoder}`\n\n{len(f.is_val)} images ({int((~f.is_val).sum())} train / "
            f"{int(f.is_val.sum())} validation) · {f.num_classes} classes · {f.num_concepts} concepts · "
            f"teacher accuracy **{acc}**")
    rows = []
    for c, name in enumerate(f.class_names):
        mine = labels == c
        rows.append({"class": name, "images (label)": int(mine.sum()), "teacher predicts": int((teacher_pred == c).sum()),
                     "teacher accuracy": _pct(float(np.mean(teacher_pred[mine] == c)) if mine.any() else None)})
    samples = []
    for c, name in enumerate(f.class_names):
        rows_c = np.nonzero(labels == c)[0] if known.any() else np.nonzero(teacher_pred == c)[0]
        for position in rows_c[:2]:
            samples.append((ws.image_of(int(position)), name))
    return text, pd.DataFrame(rows), samples


# -- 2. student performance ---------------------------------------------------------------------------
def performance(ws: Workspace) -> tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Headline metrics, per-class teacher-vs-student bars, fidelity-vs-NEC curve, disagreement subsets."""
    if ws.session is None:
        return "No student yet: **Distil**.", pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    m = ws.session.metrics
    text = (f"**Fidelity** {_pct(m['fidelity'])} · **student accuracy** {_pct(m['accuracy'])} · "
            f"**teacher accuracy** {_pct(m['teacher_accuracy'])} · NEC {m['nec']:.1f} · "
            f"KL {m['kl']:.3f} · on {m['n_images']} validation images")
    full = ws.session.evaluate()
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
    subsets = ws.disagreement_subsets()
    table = pd.DataFrame([{"teacher says": g["teacher"], "student says": g["student"], "images": len(g["positions"])}
                          for g in subsets], columns=["teacher says", "student says", "images"])
    return text, pd.DataFrame(bars), curve, table


def subset_gallery(ws: Workspace) -> list:
    if ws.subset is None or ws.session is None:
        return []
    return [(ws.image_of(int(p)), f"#{int(ws.features.image_ids[p])}") for p in ws.subset[:24]]


# -- 3. concept-class heatmap -------------------------------------------------------------------------
def heatmap_frame(ws: Workspace, n: int, sort: str) -> tuple[pd.DataFrame, list[int]]:
    """Influence table (concepts x classes) of the top ``n`` concepts, and their concept indices."""
    influence = ws.influence()
    order = ws.heatmap_order(n, sort)
    frame = pd.DataFrame(influence[:, order].T.round(3), columns=ws.session.class_names)
    frame.insert(0, "concept", [ws.session.concepts[k] for k in order])
    return frame, order


def heatmap(ws: Workspace, n: int = 20, sort: str = "any class"):
    """A styled influence table: blue for positive, red for negative, the selected cell outlined."""
    if ws.session is None:
        return pd.DataFrame({"concept": []})
    frame, order = heatmap_frame(ws, n, sort)
    values = frame.iloc[:, 1:].to_numpy(dtype=float)
    scale = float(np.abs(values).max()) or 1.0

    def colour(column: pd.Series) -> list[str]:
        if column.name == "concept":
            return ["font-weight: 600" if order[i] == ws.concept else "" for i in range(len(column))]
        c = ws.session.class_names.index(column.name)
        out = []
        for i, v in enumerate(column):
            alpha = min(abs(float(v)) / scale, 1.0) * 0.85
            rgb = "37, 99, 235" if v > 0 else "220, 38, 38"
            style = f"background-color: rgba({rgb}, {alpha:.2f})" if v != 0 else "color: #aaa"
            if order[i] == ws.concept and c == ws.class_id:
                style += "; outline: 3px solid #f59e0b; font-weight: 700"
            out.append(style)
        return out

    return frame.style.apply(colour).format(precision=3, subset=list(frame.columns[1:]))


# -- 4. images ----------------------------------------------------------------------------------------
def concept_images(ws: Workspace, n: int = CONCEPT_IMAGES) -> tuple[str, list]:
    """The images where the selected concept is most present, its region outlined."""
    if ws.session is None or ws.concept is None:
        return "Select a concept in the heatmap.", []
    k = ws.concept
    positions = images_with_concept(ws.features, k, n)
    boxes = ws.features.region_boxes
    items = [(_boxed(ws.image_of(int(p)), tuple(boxes[ws.features.best_region[p, k]])),
              f"{ws.features.concept_scores[p, k]:.2f}") for p in positions]
    return f"Where **{ws.session.concepts[k]}** is most present (its best region outlined)", items


def image_detail(ws: Workspace) -> tuple[Image.Image | None, str, pd.DataFrame]:
    """One image: teacher and student predictions and the top contributing concepts."""
    if ws.session is None or ws.image is None:
        return None, "Click an image to see why the student and the teacher classify it as they do.", pd.DataFrame()
    p = ws.image
    f, student = ws.features, ws.session.student
    student_logits = student.logits(f.concept_scores[p : p + 1])[0]
    s_pred, t_pred = int(student_logits.argmax()), int(f.teacher_logits[p].argmax())
    label = int(f.labels_as_classes[p])
    contributions = image_contributions(f, student, p, s_pred)
    picture = ws.image_of(p)
    if contributions:
        picture = _boxed(picture, contributions[0].region, scale=4)
    text = (f"Image #{int(f.image_ids[p])}: teacher says **{f.class_names[t_pred]}**, student says "
            f"**{f.class_names[s_pred]}**" + (f", label **{f.class_names[label]}**" if label >= 0 else ""))
    table = pd.DataFrame([{"concept": c.concept, "presence": round(c.presence, 3), "weight": round(c.weight, 3),
                           "contribution": round(c.contribution, 3)} for c in contributions])
    return picture, text, table


# -- 5. tuning ----------------------------------------------------------------------------------------
def selection(ws: Workspace) -> str:
    if ws.session is None or ws.concept is None or ws.class_id is None:
        return "Select a cell of the heatmap to tune a concept's influence on a class."
    s = ws.session
    info = s.constraint(s.concepts[ws.concept], s.class_names[ws.class_id])
    bounds = "" if info["kind"] == "free" else f", {info['kind']} in [{info['lower']:.3g}, {info['upper']:.3g}]"
    return (f"Selected: **{html.escape(s.concepts[ws.concept], quote=False)}** for class **{html.escape(s.class_names[ws.class_id], quote=False)}**"
            f" · weight {info['weight']:+.3f}{bounds} · label blend alpha {s.label_weight:g}")


def preview_text(preview: Preview) -> str:
    d, before, after = preview.delta, preview.metrics_before, preview.metrics_after
    changed = ", ".join(f"{c['class_name']}: {c['before']:+.3f} -> {c['after']:+.3f}" for c in preview.changes)
    worst = sorted(((v["accuracy"] if v["accuracy"] is not None else v["agreement"] or 0.0, name)
                    for name, v in d["per_class"].items()), key=lambda x: x[0])
    per_class = ", ".join(f"{name} {_delta(v)}" for v, name in worst[:2] + worst[-2:])
    return (f"**What if: {html.escape(preview.edit.describe(), quote=False)}** (refitted in {preview.seconds:.2f} s)\n\n"
            f"weight {changed}\n\nfidelity {_pct(before['fidelity'])} -> {_pct(after['fidelity'])} "
            f"({_delta(d['fidelity'])}) · accuracy {_pct(before['accuracy'])} -> {_pct(after['accuracy'])} "
            f"({_delta(d['accuracy'])})\n\nper class: {per_class}")


def preview_text_entry(entry: LogEntry) -> str:
    """What an applied action did: its summary and metric changes."""
    d, after = entry.delta, entry.metrics_after
    refit = f" (refitted in {entry.refit['seconds']:.2f} s)" if entry.refit else ""
    if entry.refit and not entry.refit.get("converged", True):
        refit = refit[:-1] + ", stopped at the solver's iteration limit)"
    return (f"**Step {entry.step}: {html.escape(entry.summary, quote=False)}**{refit} · fidelity {_pct(after['fidelity'])} "
            f"({_delta(d.get('fidelity'))}) · accuracy {_pct(after['accuracy'])} ({_delta(d.get('accuracy'))})")


def edits_table(ws: Workspace) -> pd.DataFrame:
    if ws.session is None:
        return pd.DataFrame(columns=["concept", "class", "kind", "weight"])
    return pd.DataFrame([{"concept": e["concept"], "class": e["class_name"], "kind": e["kind"],
                          "weight": round(e["weight"], 4)} for e in ws.session.edits()],
                        columns=["concept", "class", "kind", "weight"])


# -- 6. provenance ------------------------------------------------------------------------------------
def provenance(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The log as a table, and the metrics after each step (long format, for a line plot)."""
    if ws.session is None:
        return pd.DataFrame(), pd.DataFrame()
    log = ws.session.log
    current = next(e.step for e in reversed(log) if e.state == ws.session.cursor)  # the step that led here last
    rows, points = [], []
    for e in log:
        d = e.delta
        rows.append({"step": e.step, "time": e.time[11:19], "action": e.summary,
                     "fidelity": _pct(e.metrics_after["fidelity"]), "Δ fidelity": _delta(d.get("fidelity")),
                     "accuracy": _pct(e.metrics_after["accuracy"]), "Δ accuracy": _delta(d.get("accuracy")),
                     "current": "●" if e.step == current else ""})
        points.append({"step": e.step, "metric": "fidelity", "value": e.metrics_after["fidelity"]})
        if e.metrics_after["accuracy"] is not None:
            points.append({"step": e.step, "metric": "accuracy", "value": e.metrics_after["accuracy"]})
    return pd.DataFrame(rows), pd.DataFrame(points)
