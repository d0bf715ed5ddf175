"""Measure a built Shapes world: zero-shot accuracy and localisation of its dual encoder, its teacher's
accuracy and planted bias, and what a distilled student makes of it (``infincond demo check``)."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..linear import strongest
from ..metrics import accuracy_by_class, percent
from .dual_encoder import TEMPLATE, patch_coverage
from .scenes import SHAPES, VOCABULARY, random_scenes, render_many
from .world import World

#: Quality the full world must reach (``infincond demo check``).
THRESHOLDS = {"zero_shot": 0.90, "localisation": 0.80, "teacher_gap": 0.15, "fidelity": 0.90, "nec": 10}

@dataclass
class WorldReport:
    """Measured quality of a world.

    zero_shot: accuracy per attribute family of the whole-image embedding against "a photo of {value}."
    on fresh images. localisation: share of fresh images where the best region of their class concept
    (the product's presence arg-max) is a cell at least a quarter covered by the object.
    teacher_accuracy: per split, per class. teacher_gap: the spurious class's accuracy on held-out biased
    data (``validation``) minus on the balanced ``test``. distillation: fidelity, NEC and top concepts of
    the spurious class, distilled with the built-in corpus plus the world's vocabulary.
    """

    n_images: int
    zero_shot: dict[str, float]
    localisation: float
    teacher_accuracy: dict[str, dict[str, float]]
    teacher_overall: dict[str, float]
    teacher_gap: float
    spurious_class: str
    spurious_background: str
    distillation: dict | None = None
    seconds: float = 0.0

    def passes(self) -> dict[str, bool]:
        """Each quality criterion and whether it holds."""
        out = {f"zero-shot {f} >= {THRESHOLDS['zero_shot']:.0%}": v >= THRESHOLDS["zero_shot"]
               for f, v in self.zero_shot.items()}
        out[f"localisation >= {THRESHOLDS['localisation']:.0%}"] = self.localisation >= THRESHOLDS["localisation"]
        out[f"teacher gap >= {THRESHOLDS['teacher_gap'] * 100:.0f} points"] = \
            self.teacher_gap >= THRESHOLDS["teacher_gap"]
        if self.distillation is not None:
            d = self.distillation
            out[f"fidelity >= {THRESHOLDS['fidelity']:.0%}"] = d["fidelity"] >= THRESHOLDS["fidelity"]
            out[f"NEC <= {THRESHOLDS['nec']} per class"] = d["nec_max"] <= THRESHOLDS["nec"]
            out[f"'{self.spurious_background}' among the top concepts of '{self.spurious_class}'"] = (
                self.spurious_background in d["top_concepts"])
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """The report as readable text, one criterion per line."""
        pct = functools.partial(percent, width=6)
        lines = [f"Dual encoder, on {self.n_images} fresh images:"]
        lines += [f"  zero-shot {family:<11}{pct(v)}" for family, v in self.zero_shot.items()]
        lines.append(f"  class concept's best region on the object  {pct(self.localisation)}")
        lines.append("Teacher, accuracy per class (held-out biased validation -> balanced test):")
        for name in self.teacher_accuracy["validation"]:
            lines.append(f"  {name:<10}{pct(self.teacher_accuracy['validation'][name])} -> "
                         f"{pct(self.teacher_accuracy['test'][name])}")
        lines.append(f"  overall   {pct(self.teacher_overall['validation'])} -> {pct(self.teacher_overall['test'])}")
        lines.append(f"  gap on '{self.spurious_class}': {100 * self.teacher_gap:.1f} points")
        if self.distillation is not None:
            d = self.distillation
            lines.append(f"Distilled student ({d['n_concepts']} concepts, {d['samples']} train images):")
            lines.append(f"  validation fidelity {pct(d['fidelity'])}, NEC {d['nec']:.1f} per class "
                         f"(max {d['nec_max']})")
            top = ", ".join(f"{c} ({w:+.2f})" for c, w in zip(d["top_concepts"], d["top_weights"], strict=True))
            lines.append(f"  top concepts of '{self.spurious_class}': {top}")
        lines.append("Criteria:")
        lines += [f"  [{'pass' if ok else 'FAIL'}] {name}" for name, ok in self.passes().items()]
        return "\n".join(lines)


def _teacher_accuracy(world: World) -> tuple[dict, dict]:
    from ..data import DataConfig, ImageSource
    from ..teacher import Teacher

    per_class, overall = {}, {}
    teacher = None
    for split in ("validation", "test"):
        source = ImageSource.load(DataConfig(world.dataset, split=split, samples=None))
        if teacher is None:
            teacher = Teacher.from_pretrained(world.teacher, dataset_label_names=source.label_names, device="cpu")
        predictions = np.concatenate([teacher.logits(images).argmax(1) for _, images in source.batches(256)])
        overall[split], accuracy = accuracy_by_class(predictions, source.labels, len(source.label_names))
        per_class[split] = {name: float(accuracy[c]) for c, name in enumerate(source.label_names)}
    return per_class, overall


def _encoder_quality(world: World, n_images: int) -> tuple[dict[str, float], float]:
    import torch

    from ..concepts.encoder import ConceptEncoder
    from ..concepts.presence import concept_presence

    encoder = ConceptEncoder.from_pretrained(world.encoder, device="cpu")
    scenes = random_scenes(n_images, world.config.scenes, world.config.seed + 1, stream=200)  # never trained on
    images, masks = render_many(scenes, world.config.scenes.image_size)
    regions = torch.cat([encoder.encode_regions(images[i: i + 128]).embeddings for i in range(0, n_images, 128)])
    zero_shot = {}
    for family in ("shape", "colour", "pattern", "background", "size"):
        prompts = encoder.encode_text([TEMPLATE.format(v) for v in VOCABULARY[family]])
        predicted = (regions[:, 0] @ prompts.T).argmax(1).numpy()
        truth = np.array([VOCABULARY[family].index(scene.attributes()[family]) for scene, _ in scenes])
        zero_shot[family] = float((predicted == truth).mean())
    shape_prompts = encoder.encode_text([TEMPLATE.format(v) for v in SHAPES])
    _, best_region = concept_presence(regions, shape_prompts)
    truth = np.array([SHAPES.index(scene.shape) for scene, _ in scenes])
    best = best_region.numpy()[np.arange(n_images), truth]  # 0 is the whole image, then row-major cells
    side = int(round(np.sqrt(regions.shape[1] - 1)))
    coverage = np.concatenate([np.zeros((n_images, 1)),
                               patch_coverage(masks, world.config.scenes.image_size // side)], 1)
    localisation = float((coverage[np.arange(n_images), best] >= 0.25).mean())
    return zero_shot, localisation


def _distillation(world: World, samples: int, progress: bool) -> dict:
    from ..concepts.corpus import ConceptCorpus
    from ..data import DataConfig
    from ..distill import DistillConfig
    from ..pipeline import run_distillation

    corpus = ConceptCorpus.builtin() + ConceptCorpus.from_list(world.concepts, source="world")
    run = run_distillation(world.teacher, DataConfig(world.dataset, split="train", samples=samples), world.encoder,
                           corpus, distill_config=DistillConfig(nec=THRESHOLDS["nec"]), cache_dir=False,
                           device="cpu", progress=progress)
    c = run.features.class_names.index(world.spurious_class)
    weight = run.linear.weight[c]
    order = strongest(weight, 5)
    return {"fidelity": run.metrics.fidelity, "nec": run.metrics.nec, "nec_max": int(run.metrics.nec_per_class.max()),
            "student_accuracy": run.metrics.accuracy, "teacher_accuracy": run.metrics.teacher_accuracy,
            "n_concepts": len(run.features.concepts), "samples": samples,
            "top_concepts": [run.features.concepts[k] for k in order], "top_weights": [float(weight[k]) for k in order]}


def check_world(world: World, *, n_images: int = 600, distill_samples: int | None = 2000,
                progress: bool = True) -> WorldReport:
    """Measure the world's quality (see :class:`WorldReport`) and save it as ``check.json`` beside the
    manifest. ``distill_samples=None`` skips the distillation."""
    start = time.perf_counter()
    zero_shot, localisation = _encoder_quality(world, n_images)
    per_class, overall = _teacher_accuracy(world)
    name = world.spurious_class
    report = WorldReport(
        n_images=n_images, zero_shot=zero_shot, localisation=localisation, teacher_accuracy=per_class,
        teacher_overall=overall, teacher_gap=per_class["validation"][name] - per_class["test"][name],
        spurious_class=name, spurious_background=world.spurious_background,
        distillation=_distillation(world, distill_samples, progress) if distill_samples else None,
    )
    report.seconds = round(time.perf_counter() - start, 1)
    (world.root / "check.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report
