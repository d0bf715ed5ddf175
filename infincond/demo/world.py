"""The embedded default world: build the three local Hugging Face-format repos (dataset, dual encoder,
teacher) into a cache folder, find them again, and measure their quality."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .biased_teacher import TeacherTrainConfig, train_teacher
from .dual_encoder import STAGES as ENCODER_STAGES
from .dual_encoder import TEMPLATE, EncoderTrainConfig, patch_coverage, train_dual_encoder
from .parallel import intra_op_threads
from .scenes import (
    BACKGROUNDS,
    SHAPES,
    SPLITS,
    VOCABULARY,
    SceneConfig,
    random_scenes,
    render_many,
    vocabulary_concepts,
    write_dataset_repo,
)

FORMAT_VERSION = 1
MANIFEST = "world.json"

#: Quality the full world must reach (``infincond demo check``).
THRESHOLDS = {"zero_shot": 0.90, "localisation": 0.80, "teacher_gap": 0.15, "fidelity": 0.90, "nec": 10}


@dataclass
class WorldConfig:
    """Everything a world is built from; the same config and seed give the same world."""

    seed: int = 0
    scenes: SceneConfig = field(default_factory=SceneConfig)
    encoder: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    teacher: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)

    @classmethod
    def quick(cls, seed: int = 0) -> WorldConfig:
        """A reduced world for tests and smoke runs: the same code and repo layout, tiny splits and short
        training (about 15 s on 2 idle cores).

        Just enough training that presence is non-zero (below about 60 encoder steps every cosine is
        negative, so every score clips to 0) and that the teacher already leans on the spurious background,
        so the student has something to show and to edit."""
        return cls(seed=seed,
                   scenes=SceneConfig(split_sizes={"train": 240, "validation": 60, "test": 48}),
                   encoder=EncoderTrainConfig(pool_size=512, image_steps=80, text_steps=80, batch_size=32,
                                              text_batch_size=32, warmup=4),
                   teacher=TeacherTrainConfig(hidden_sizes=(8, 16), epochs=3, batch_size=32))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> WorldConfig:
        teacher = dict(values["teacher"])
        teacher["hidden_sizes"] = tuple(teacher["hidden_sizes"])
        return cls(seed=values["seed"], scenes=SceneConfig(**values["scenes"]),
                   encoder=EncoderTrainConfig(**values["encoder"]), teacher=TeacherTrainConfig(**teacher))

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass
class World:
    """A built world: where its repos are, how it was made, and its ground-truth vocabulary.

    ``dataset``, ``encoder`` and ``teacher`` are local repo folders that load like Hub repo ids.
    """

    root: Path
    config: WorldConfig
    manifest: dict

    @property
    def dataset(self) -> str:
        return str(self.root / "dataset")

    @property
    def encoder(self) -> str:
        return str(self.root / "encoder")

    @property
    def teacher(self) -> str:
        return str(self.root / "teacher")

    @property
    def spurious_class(self) -> str:
        return self.config.scenes.spurious_class

    @property
    def spurious_background(self) -> str:
        return self.config.scenes.spurious_background

    @property
    def vocabulary(self) -> dict[str, tuple[str, ...]]:
        """The ground-truth concepts of the world, family by family."""
        return dict(VOCABULARY)

    @property
    def concepts(self) -> list[str]:
        """The ground-truth concepts as one list (every attribute value, as text)."""
        return vocabulary_concepts()


def default_world_root(config: WorldConfig | None = None) -> Path:
    """``<cache>/worlds/shapes-<config fingerprint>``, the cache being ``$INFINCOND_CACHE`` or
    ``~/.cache/infincond``."""
    from ..features import default_cache_dir

    return default_cache_dir() / "worlds" / f"shapes-{(config or WorldConfig()).fingerprint}"


def _card(kind: str, config: WorldConfig) -> str:
    s = config.scenes
    common = ("The embedded offline world of [InFiConD](https://github.com/infincond/infincond): "
              "generated scenes of a coloured, patterned object on a textured background.")
    if kind == "dataset":
        sizes = ", ".join(f"`{k}` {v}" for k, v in s.split_sizes.items())
        return f"""---
license: mit
task_categories: [image-classification]
tags: [synthetic, spurious-correlation, infincond]
pretty_name: InFiConD Shapes world
configs:
- config_name: default
  data_files:
{''.join(f'  - split: {split}{chr(10)}    path: data/{split}-*{chr(10)}' for split in SPLITS)}---
# Shapes world

{common}

- `label`: the shape ({', '.join(SHAPES)}), the class to predict.
- Attributes, varying independently: `colour`, `pattern`, `size`, `background` ({', '.join(BACKGROUNDS)}),
  `rocks` (small distractors), and the object's `bbox` in pixels.
- Splits: {sizes}. In `train` and `validation`, {s.spurious_rate:.0%} of the `{s.spurious_class}` images lie on
  `{s.spurious_background}`, which holds only {s.rare_rate:.0%} of every other class. `test` is balanced over
  class x background, so the correlation is absent there.
- Seed {config.seed}; built by `infincond demo build`.
"""
    if kind == "encoder":
        return f"""---
library_name: transformers
tags: [align, zero-shot-image-classification, infincond]
---
# Shapes world dual encoder

{common}

A small ALIGN model (convolutional image tower, BERT text tower) trained from scratch on the world's
scenes and generated captions; its image embedding is the mean of an 8 x 8 feature map whose cells
are region embeddings. Prompt template: `{TEMPLATE}`. Built by `infincond demo build`.
"""
    return f"""---
library_name: transformers
tags: [image-classification, resnet, infincond]
---
# Shapes world teacher

{common}

A small ResNet trained on the biased `train` split, where `{s.spurious_class}` mostly lies on
`{s.spurious_background}`: it leans on that background. Built by `infincond demo build`.
"""


#: The stages of a build, as ``build_world``'s ``on_progress`` names them. The dataset and the teacher
#: are made beside the dual encoder (its scenes, image tower, pool embeddings and text tower, in order),
#: so their reports interleave; "saving" is last.
BUILD_STAGES = (*ENCODER_STAGES, "dataset", "teacher", "saving")

#: ``on_progress(stage, fraction, seconds_left)``: the stage that advanced, the whole build's fraction
#: done (0 to 1, never decreasing, 1.0 exactly once, when the world is in place) and an estimate of the
#: seconds left (None until there is enough to go on).
ProgressCallback = Callable[[str, float, "float | None"], None]


def _stage_costs(config: WorldConfig) -> dict[str, float]:
    """Each stage's share of the build, in the seconds it adds on an idle 2-core AMD EPYC (Zen 4): the
    weights of the overall fraction, so that it advances about evenly in time. The dataset and the
    encoder's scenes are rendered side by side but mostly hold Python's lock, so they count at about one
    core; the teacher trains beside the image tower and takes its share of the two cores."""
    s, e, t = config.scenes, config.encoder, config.teacher
    pixels = (s.image_size / 64) ** 2
    train = s.split_sizes["train"]
    teacher_steps = max(1, math.ceil(t.epochs * train / t.batch_size))
    teacher_width = sum(h * h for h in t.hidden_sizes) / sum(h * h for h in (32, 64, 128))
    return {
        "encoder scenes": 0.85e-3 * e.pool_size * pixels,
        "image tower": 1.1e-3 * e.image_steps * e.batch_size * pixels,
        "pool embeddings": 0.42e-3 * e.pool_size * pixels,
        "text tower": 0.47e-3 * e.text_steps * e.text_batch_size,
        "dataset": 1.2e-3 * sum(s.split_sizes.values()) * pixels,
        "teacher": 0.9e-3 * teacher_steps * min(t.batch_size, train) * pixels * max(teacher_width, 0.05),
        "saving": 0.5,
    }


class _Aborted(Exception):
    """Raised in one thread of a build when another one failed."""


class _BuildProgress:
    """The build's progress across its threads: each stage's share done, weighted by its cost, reported to
    the callback at most every ``interval`` seconds (and whenever a stage starts or ends), and to a
    terminal bar."""

    def __init__(self, costs: dict[str, float], callback: ProgressCallback | None, bar, interval: float = 0.5):
        self.costs, self.total = costs, sum(costs.values())
        self.callback, self.bar, self.interval = callback, bar, interval
        self.done = dict.fromkeys(costs, 0.0)
        self.spans: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.last_emit, self.fraction = -math.inf, 0.0
        self.failed = False

    def update(self, stage: str, done: float, total: float) -> None:
        with self.lock:
            if self.failed:
                raise _Aborted
            share = min(1.0, done / total) if total else 1.0
            now = time.perf_counter() - self.start
            first = stage not in self.spans
            self.spans.setdefault(stage, [now, now])[1] = now
            ends = share >= 1.0 > self.done[stage]
            self.done[stage] = max(self.done[stage], share)
            fraction = sum(self.costs[k] * v for k, v in self.done.items()) / self.total
            if stage == BUILD_STAGES[-1] and share >= 1.0:
                fraction = 1.0
            else:
                fraction = min(fraction, 0.999)  # 1.0 only once the world is in place
            if first or ends or fraction == 1.0 or now - self.last_emit >= self.interval:
                self._emit(stage, max(fraction, self.fraction), now)

    def _emit(self, stage: str, fraction: float, now: float) -> None:
        self.last_emit, self.fraction = now, fraction
        if fraction >= 1.0:
            left = 0.0
        elif fraction < 0.02 or now < 2.0:
            left = None
        else:
            left = now * (1.0 - fraction) / fraction
        if self.bar is not None:
            self.bar.n = round(100 * fraction, 1)
            self.bar.set_postfix_str(stage, refresh=True)
        if self.callback is not None:
            try:
                self.callback(stage, fraction, left)
            except BaseException:
                self.failed = True
                raise

    def reporter(self, stage: str) -> Callable[[int, int], None]:
        return lambda done, total: self.update(stage, done, total)

    def abort(self) -> None:
        with self.lock:
            self.failed = True

    def seconds(self) -> dict[str, float]:
        return {stage: round(end - start, 1) for stage, (start, end) in self.spans.items()}


def _import_first(config: WorldConfig) -> None:
    """Import and exercise here, before the helper thread starts, what both of the build's threads use
    (``datasets``, pyarrow, transformers' ALIGN, ResNet and their processors): two threads importing the
    same packages for the first time at once can meet a half-initialised module (an AttributeError seen
    once in a test run)."""
    import datasets  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from .biased_teacher import build_teacher, pixel_affine
    from .dual_encoder import build_dual_encoder

    _, processor = build_teacher(config.scenes.image_size, config.teacher, config.seed)
    pixel_affine(processor)
    _, processor = build_dual_encoder(config.scenes.image_size, config.encoder, config.seed)
    pixel_affine(processor.image_processor)
    processor.tokenizer(["a photo of a circle."], padding=True, return_tensors="pt")


def _dataset_and_teacher(folder: Path, config: WorldConfig, progress: bool, tracker: _BuildProgress) -> dict:
    """Write the dataset repo, then train the teacher on its rendered ``train`` split (not rendered twice)."""
    try:
        kept: dict[str, tuple] = {}
        write_dataset_repo(folder / "dataset", config.scenes, config.seed, _card("dataset", config), progress,
                           report=tracker.reporter("dataset"), on_split=kept.__setitem__)
        scenes, images = kept["train"]
        del kept
        labels = np.array([SHAPES.index(scene.shape) for scene, _ in scenes])
        summary = train_teacher(folder / "teacher", images, labels, config.scenes.image_size, config.teacher,
                                config.seed, progress, report=tracker.reporter("teacher"))
        (folder / "teacher" / "README.md").write_text(_card("teacher", config))
        return summary
    except _Aborted:
        raise
    except BaseException:
        tracker.abort()  # stop the encoder's thread too
        raise


def build_world(config: WorldConfig | None = None, root: str | os.PathLike | None = None, *, force: bool = False,
                progress: bool = True, on_progress: ProgressCallback | None = None) -> World:
    """Generate the dataset, train the dual encoder and the teacher, and write the three repos and a
    manifest into ``root`` (default: :func:`default_world_root`). The folder appears complete or not at
    all. An existing world is reused unless ``force`` (reusing it, ``on_progress`` hears only
    ``("saving", 1.0, 0.0)``).

    ``progress``: terminal bars. ``on_progress(stage, fraction, seconds_left)``: for a page, called from the
    build's threads about every half second (at most 1.2 s apart in an idle full build) and whenever a
    stage starts or ends, with the stage that advanced (:data:`BUILD_STAGES`), the overall fraction done
    (never decreasing, ending at 1.0 once the world is in place) and the estimated seconds left (None at
    first). Keep it quick; an exception raised in it stops the build and is raised by ``build_world``
    (a page's cancel button can raise one).

    The dual encoder trains in the calling thread as two shards side by side, the dataset and then the
    teacher in a helper thread beside it, each thread with half the intra-op threads (so one each on
    2 cores). The same config and seed give the same world, whatever the timing."""
    import torch
    from tqdm.auto import tqdm

    config = config or WorldConfig()
    root = Path(root) if root is not None else default_world_root(config)
    if (root / MANIFEST).exists() and not force:
        if on_progress is not None:
            on_progress(BUILD_STAGES[-1], 1.0, 0.0)
        return load_world(root, build=False)
    start = time.perf_counter()
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    per_thread = max(1, torch.get_num_threads() // 2)
    bar = tqdm(total=100, desc="Building the Shapes world", disable=not progress,
               bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]")
    tracker = _BuildProgress(_stage_costs(config), on_progress, bar if progress else None)
    try:
        _import_first(config)
        with intra_op_threads(per_thread), ThreadPoolExecutor(1, thread_name_prefix="infincond-world",
                                                               initializer=torch.set_num_threads,
                                                               initargs=(per_thread,)) as helper:
            side = helper.submit(_dataset_and_teacher, partial, config, progress, tracker)
            try:
                encoder_summary = train_dual_encoder(partial / "encoder", config.scenes, config.encoder, config.seed,
                                                     progress, report=tracker.update)
            except _Aborted:
                side.result()  # the helper thread's own error
                raise
            except BaseException:
                tracker.abort()
                wait([side])
                raise
            (partial / "encoder" / "README.md").write_text(_card("encoder", config))
            teacher_summary = side.result()
        seconds = tracker.seconds()
        manifest = {
            "format_version": FORMAT_VERSION,
            "fingerprint": config.fingerprint,
            "config": config.to_dict(),
            "vocabulary": {k: list(v) for k, v in VOCABULARY.items()},
            "spurious": {"class": config.scenes.spurious_class, "background": config.scenes.spurious_background},
            "training": {"encoder": encoder_summary, "teacher": teacher_summary},
            "seconds": {"dataset": seconds.get("dataset", 0.0), "encoder": encoder_summary["seconds"],
                        "teacher": round(teacher_summary["seconds"], 1), "stages": seconds,
                        "total": round(time.perf_counter() - start, 1)},
            "threads": {"intra_op": per_thread, "encoder_shards": config.encoder.shards},
            "torch": torch.__version__,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
        tracker.update(BUILD_STAGES[-1], 1, 1)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        bar.close()
    return load_world(root, build=False)


def load_world(root: str | os.PathLike | None = None, *, config: WorldConfig | None = None, build: bool = True,
               progress: bool = True) -> World:
    """The world at ``root`` (default: the default world's cache folder), built first when missing and
    ``build`` is true."""
    root = Path(root) if root is not None else default_world_root(config)
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        if not build:
            raise ConfigError(f"No Shapes world at {root}: run `infincond demo build` first.")
        return build_world(config, root, progress=progress)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        if not build:
            raise ConfigError(f"The Shapes world at {root} is from an older version: rebuild it with "
                              "`infincond demo build --force`.")
        return build_world(config or WorldConfig.from_dict(manifest["config"]), root, force=True, progress=progress)
    return World(root, WorldConfig.from_dict(manifest["config"]), manifest)


# -- quality ------------------------------------------------------------------------------------------
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
        out[f"teacher gap >= {THRESHOLDS['teacher_gap'] * 100:.0f} points"] = self.teacher_gap >= THRESHOLDS["teacher_gap"]
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
        pct = lambda v: f"{100 * v:5.1f}%"  # noqa: E731
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
            lines.append(f"  validation fidelity {pct(d['fidelity'])}, NEC {d['nec']:.1f} per class (max {d['nec_max']})")
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
        labels = source.labels
        per_class[split] = {name: float((predictions[labels == c] == c).mean()) if (labels == c).any() else float("nan")
                            for c, name in enumerate(source.label_names)}
        overall[split] = float((predictions == labels).mean())
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
    coverage = np.concatenate([np.zeros((n_images, 1)), patch_coverage(masks, world.config.scenes.image_size // side)], 1)
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
    order = [k for k in np.argsort(-np.abs(weight)) if weight[k] != 0][:5]
    return {"fidelity": run.metrics.fidelity, "nec": run.metrics.nec, "nec_max": int(run.metrics.nec_per_class.max()),
            "student_accuracy": run.metrics.student_accuracy, "teacher_accuracy": run.metrics.teacher_accuracy,
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
