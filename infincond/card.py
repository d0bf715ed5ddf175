"""The model card of a pushed student: Hub metadata (library, task, base model, dataset, eval results in
``model-index``) and readable text (what the student is, how it was distilled, its top concepts per
class, the edits applied, usage, limitations)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hub import endpoint, is_repo_id

if TYPE_CHECKING:
    from .student import ConceptStudent

TAGS = ["infincond", "concept-bottleneck", "knowledge-distillation", "interpretability", "image-classification"]


def _link(ref: str | None) -> str:
    """A Markdown link to a Hub repo, or the local path in code font."""
    if not ref:
        return "unknown"
    return f"[`{ref}`]({endpoint()}/{ref})" if is_repo_id(ref) else f"`{ref}` (a local folder)"


def _dataset_link(ref: str | None) -> str:
    if ref and is_repo_id(ref):
        return f"[`{ref}`]({endpoint()}/datasets/{ref})"
    return _link(ref)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _eval_results(student: ConceptStudent, model_name: str) -> list[EvalResult]:
    """Fidelity and accuracy as ``model-index`` entries, on the dataset and split they were measured on."""
    metrics, dataset = student.metrics or {}, student.provenance.get("dataset", {})
    ref = dataset.get("dataset")
    if not metrics or not ref:
        return []
    common = {"task_type": "image-classification", "task_name": "Image Classification",
              "dataset_type": ref if is_repo_id(ref) else "local", "dataset_name": ref.rstrip("/").split("/")[-1],
              "dataset_config": dataset.get("config_name"), "dataset_split": dataset.get("split")}
    results = [EvalResult(**common, metric_type="fidelity", metric_name="Fidelity (agreement with the teacher)",
                          metric_value=round(float(metrics["fidelity"]), 4))]
    if metrics.get("accuracy") is not None:
        results.append(EvalResult(**common, metric_type="accuracy", metric_name="Accuracy (against labels)",
                                  metric_value=round(float(metrics["accuracy"]), 4)))
    return results


def top_concepts_table(student: ConceptStudent, per_class: int = 5) -> str:
    """A Markdown table: for each class, its strongest concepts with signed weights."""
    weight = student.weight.detach().numpy()
    lines = ["| class | concepts (weight on standardised presence) |", "|---|---|"]
    for c, name in enumerate(student.class_names):
        order = [k for k in np.argsort(-np.abs(weight[c]), kind="stable")[:per_class] if weight[c, k] != 0]
        cells = ", ".join(f"{student.concepts[k]} ({weight[c, k]:+.2f})" for k in order) or "(none)"
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def _edits(student: ConceptStudent) -> str:
    entries = (student.tuning_log or {}).get("entries", [])[1:] or student.provenance.get("tuning", [])
    if not entries:
        return "None: this is the distilled student as fitted."
    lines = []
    for e in entries:
        after, before = e.get("metrics_after") or {}, e.get("metrics_before") or {}
        delta = ""
        if after.get("fidelity") is not None and before.get("fidelity") is not None:
            delta = f" (fidelity {_pct(before['fidelity'])} → {_pct(after['fidelity'])})"
        lines.append(f"{e.get('step', len(lines) + 1)}. {e.get('summary', e.get('action'))}{delta}")
    return ("In order (the full log, replayable, is `tuning_log.json`):\n\n" + "\n".join(lines)
            if student.tuning_log else "\n".join(lines))


def model_card(student: ConceptStudent, repo_id: str | None = None) -> ModelCard:
    """The card of ``student`` (pushed as ``repo_id``): metadata and text, ready to ``save`` or ``push``."""
    prov, metrics = student.provenance, student.metrics or {}
    encoder, teacher = student.encoder_info.get("repo_id"), prov.get("teacher", {}).get("repo_id")
    dataset = prov.get("dataset", {})
    dataset_ref, distill = dataset.get("dataset"), student.distill_info
    name = (repo_id or "infincond-student").split("/")[-1]
    data = ModelCardData(
        library_name="infincond", pipeline_tag="image-classification", tags=TAGS,
        base_model=encoder if is_repo_id(encoder) else None,
        datasets=[dataset_ref] if is_repo_id(dataset_ref) else None,
        metrics=["accuracy"] if metrics.get("accuracy") is not None else None,
        model_name=name, eval_results=_eval_results(student, name) or None,
    )
    where = metrics.get("evaluated_on", "held-out validation images of the sample")
    split = " / ".join(str(v) for v in (dataset.get("config_name"), dataset.get("split")) if v)
    sample = f"{dataset.get('n_images', '?')} images ({dataset.get('n_val', '?')} held out for validation)"
    per_class = metrics.get("per_class") or {}
    class_rows = "\n".join(f"| {c} | {_pct(v.get('fidelity'))} | {_pct(v.get('accuracy'))} |" for c, v in per_class.items())
    usage = f'''```python
from PIL import Image
from infincond import ConceptStudent

student = ConceptStudent.from_pretrained("{repo_id or 'path/to/student'}")  # loads the encoder's vision tower too
prediction = student.predict(Image.open("image.jpg"))
print(prediction.class_names[0], prediction.probs.max())
for part in student.explain(Image.open("image.jpg")).contributions:  # why: concepts, weights, regions
    print(part.concept, round(part.contribution, 3), part.box)
```'''
    text = f"""
# {name}

A concept-based student of the image classifier {_link(teacher)}, distilled with
[InFiConD](https://github.com/infincond/infincond): a sparse linear model over the presence of
{len(student.concepts)} text concepts in the image, as measured by the dual encoder {_link(encoder)}. Each class
score is a weighted sum of a few concepts, so every prediction can be read and every weight edited.

## How it was distilled

| | |
|---|---|
| Teacher | {_link(teacher)} |
| Data | {_dataset_link(dataset_ref)}{f' ({split})' if split else ''}: {sample} |
| Concept encoder | {_link(encoder)}, presence = best match over image regions, clipped at 0 |
| Concepts | {len(student.concepts)} |
| Method | {distill.get('method', 'kd')}: fit the teacher's outputs (temperature {distill.get('temperature', 1.0)}), L1-sparse, {distill.get('nec', 'free')} concepts per class; label weight {distill.get('label_weight', 0.0)} |

## Results

On {metrics.get('n_images', '?')} {where}:

| metric | value |
|---|---|
| Fidelity (agreement with the teacher) | {_pct(metrics.get('fidelity'))} |
| Student accuracy (against labels) | {_pct(metrics.get('accuracy'))} |
| Teacher accuracy | {_pct(metrics.get('teacher_accuracy'))} |
| Effective concepts per class (NEC) | {metrics.get('nec', float('nan')):.1f} |

{"| class | fidelity | accuracy |" + chr(10) + "|---|---|---|" + chr(10) + class_rows if class_rows else ""}

## Top concepts per class

{top_concepts_table(student)}

## Edits applied

{_edits(student)}

## Usage

`pip install infincond`, then:

{usage}

## Limitations

- The student imitates the teacher, including its mistakes and shortcuts; fidelity is agreement with the
  teacher, not correctness. Read the concepts before trusting a class.
- It sees only what the concept encoder can recognise among its {len(student.concepts)} concepts; anything else
  the teacher uses is invisible to it. Concept scores inherit the encoder's biases.
- The metrics above come from {metrics.get('n_images', '?')} images of one dataset and split; expect them to
  differ elsewhere.
"""
    if not metrics:
        text = text.replace("## Results", "## Results\n\n(No metrics were recorded with this student.)", 1)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
