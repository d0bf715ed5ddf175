"""The model card of a student: Hub metadata (library, task, base model, dataset, eval results in
``model-index``) in :class:`StudentCardData`, and readable text (what the student is, how it was distilled,
its top concepts per class with their spread, the edits applied, usage, limitations) rendered from the
package's ``model_card_template.md`` by ``ModelCard.from_template``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hub import endpoint, is_repo_id
from .linear import strongest
from .metrics import percent

if TYPE_CHECKING:
    from .student import ConceptStudent

TEMPLATE = Path(__file__).with_name("model_card_template.md")
#: The tags of every student on the Hub (the student's class declares them), and the card's.
STUDENT_TAGS = ("infincond", "concept-bottleneck", "knowledge-distillation", "interpretability")
TAGS = [*STUDENT_TAGS, "image-classification"]


class StudentCardData(ModelCardData):
    """The card's Hub metadata (its YAML header), plus ``content``: what its text shows, field by field
    (the template's variables), which stays out of the YAML."""

    def __init__(self, *, content: dict | None = None, **metadata) -> None:
        super().__init__(**metadata)
        self.content = content or {}

    def _to_dict(self, data_dict: dict) -> None:
        data_dict.pop("content", None)
        super()._to_dict(data_dict)


def _link(ref: str | None, kind: str = "") -> str:
    """A Markdown link to a Hub repo, or the local path in code font."""
    if not ref:
        return "unknown"
    return f"[`{ref}`]({endpoint()}/{kind}{ref})" if is_repo_id(ref) else f"`{ref}` (a local folder)"


def _eval_results(metrics: dict, dataset: dict, model_name: str) -> list[EvalResult]:
    """Fidelity and accuracy as ``model-index`` entries, on the dataset and split they were measured on."""
    ref = dataset.get("dataset")
    if not metrics or not ref or metrics.get("fidelity") is None:
        return []
    common = {"task_type": "image-classification", "task_name": "Image Classification",
              "dataset_type": ref if is_repo_id(ref) else "local", "dataset_name": ref.rstrip("/").split("/")[-1],
              "dataset_config": dataset.get("config_name"), "dataset_split": dataset.get("split")}
    results = [EvalResult(**common, metric_type="fidelity", metric_name="Fidelity (agreement with the teacher)",
                          metric_value=round(float(metrics["fidelity"]), 4))]
    if metrics.get("accuracy") is not None:
        results.append(EvalResult(**common, metric_type="accuracy", metric_name="Accuracy (against labels)",
                                  metric_value=round(float(metrics["accuracy"]), 4)))
    groups = metrics.get("groups") or {}
    if groups.get("worst_group_accuracy") is not None:
        results.append(EvalResult(**common, metric_type="worst_group_accuracy",
                                  metric_name=f"Worst-group accuracy (class x {groups['attribute']})",
                                  metric_value=round(float(groups["worst_group_accuracy"]), 4)))
    return results


def top_concepts(student: ConceptStudent, per_class: int = 5) -> list[dict]:
    """For each class, its strongest concepts with signed weights (and their bootstrap spread, when the
    student was fitted with an ensemble): [{"name", "concepts"}]."""
    weight, spread = student.linear.weight, student.linear.weight_std
    rows = []
    for c, name in enumerate(student.class_names):
        order = strongest(weight[c], per_class)
        cells = [f"{student.concepts[k]} ({weight[c, k]:+.2f}"
                 + (f" ± {spread[c, k]:.2f})" if spread is not None else ")") for k in order]
        rows.append({"name": name, "concepts": ", ".join(cells) or "(none)"})
    return rows


def _edits(student: ConceptStudent) -> list[str]:
    entries = (student.tuning_log or {}).get("entries", [])[1:] or student.provenance.get("tuning", [])
    lines = []
    for e in entries:
        after, before = e.get("metrics_after") or {}, e.get("metrics_before") or {}
        delta = ""
        if after.get("fidelity") is not None and before.get("fidelity") is not None:
            delta = f" (fidelity {percent(before['fidelity'])} → {percent(after['fidelity'])})"
        lines.append(f"{e.get('step', len(lines) + 1)}. {e.get('summary', e.get('action'))}{delta}")
    return lines


def card_data(student: ConceptStudent, repo_id: str | None = None) -> StudentCardData:
    """The card's metadata and content for ``student`` (pushed as ``repo_id``)."""
    prov, metrics, config = student.provenance, student.metrics or {}, student.distill_config
    encoder, teacher = student.encoder_ref.repo_id, prov.get("teacher", {}).get("repo_id")
    dataset = prov.get("dataset", {})
    name = (repo_id or "infincond-student").split("/")[-1]
    split = " / ".join(str(v) for v in (dataset.get("config_name"), dataset.get("split")) if v)
    sample = f"{dataset.get('n_images', '?')} images ({dataset.get('n_val', '?')} held out for validation)"
    results = [
        ("Fidelity (agreement with the teacher)", percent(metrics.get("fidelity"))),
        ("Student accuracy (against labels)", percent(metrics.get("accuracy"))),
        ("Teacher accuracy", percent(metrics.get("teacher_accuracy"))),
        ("Effective concepts per class (NEC)", f"{metrics['nec']:.1f}" if metrics.get("nec") is not None else "n/a"),
    ]
    groups = metrics.get("groups") or {}
    if groups.get("worst_group") is not None:
        results.append((f"Worst-group accuracy (class x {groups['attribute']})",
                        f"{percent(groups['worst_group_accuracy'])} ({groups['worst_group']}; the teacher's: "
                        f"{percent(groups['teacher_worst_group_accuracy'])}, {groups['teacher_worst_group']})"))
    content = {
        "model_name": name, "repo_id": repo_id or "path/to/student", "n_concepts": len(student.concepts),
        "teacher": _link(teacher), "encoder": _link(encoder),
        "data": f"{_link(dataset.get('dataset'), 'datasets/')}{f' ({split})' if split else ''}: {sample}",
        "method": f"{config.method}: fit the teacher's outputs (temperature {config.temperature:g}), L1-sparse, "
                  f"{config.nec if config.nec is not None else 'free'} concepts per class; label weight "
                  f"{config.label_weight:g}",
        "results": results if metrics else [], "n_images": metrics.get("n_images", "?"),
        "evaluated_on": prov.get("evaluated_on", "held-out validation images of the sample"),
        "per_class": [{"name": c, "agreement": percent(v.get("agreement")), "accuracy": percent(v.get("accuracy"))}
                      for c, v in (metrics.get("per_class") or {}).items()],
        "top_concepts": top_concepts(student), "has_spread": student.linear.weight_std is not None,
        "edits": _edits(student), "has_log": student.tuning_log is not None,
    }
    dataset_ref = dataset.get("dataset")
    return StudentCardData(
        library_name="infincond", pipeline_tag="image-classification", tags=TAGS,
        base_model=encoder if is_repo_id(encoder) else None,
        datasets=[dataset_ref] if is_repo_id(dataset_ref) else None,
        metrics=["accuracy"] if metrics.get("accuracy") is not None else None,
        model_name=name, eval_results=_eval_results(metrics, dataset, name) or None, content=content)


def model_card(student: ConceptStudent, repo_id: str | None = None) -> ModelCard:
    """The card of ``student`` (pushed as ``repo_id``): metadata and text, ready to ``save`` or ``push``."""
    data = card_data(student, repo_id)
    return ModelCard.from_template(data, template_path=str(TEMPLATE), **data.content)
