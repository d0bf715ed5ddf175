"""The embedded default world: build the three local Hugging Face-format repos (dataset, dual encoder,
teacher) into a cache folder, find them again, and measure their quality."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .biased_teacher import TeacherTrainConfig, train_teacher
from .dataset_repo import write_dataset_repo
from .dual_encoder import TEMPLATE, EncoderTrainConfig, train_dual_encoder
from .parallel import intra_op_threads
from .progress import BUILD_STAGES, Aborted, BuildProgress, ProgressCallback
from .scenes import (
    BACKGROUNDS,
    SHAPES,
    SPLITS,
    VOCABULARY,
    SceneConfig,
    vocabulary_concepts,
)

FORMAT_VERSION = 1
MANIFEST = "world.json"



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


def stage_costs(config: WorldConfig) -> dict[str, float]:
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


def _dataset_and_teacher(folder: Path, config: WorldConfig, progress: bool, tracker: BuildProgress) -> dict:
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
    except Aborted:
        raise
    except BaseException:
        tracker.abort()  # stop the encoder's thread too
        raise


def _manifest(config: WorldConfig, encoder_summary: dict, teacher_summary: dict, seconds: dict[str, float],
              total: float, per_thread: int) -> dict:
    """What ``world.json`` records: the config, the ground truth, and how the build went."""
    import torch

    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": config.fingerprint,
        "config": config.to_dict(),
        "vocabulary": {k: list(v) for k, v in VOCABULARY.items()},
        "spurious": {"class": config.scenes.spurious_class, "background": config.scenes.spurious_background},
        "training": {"encoder": encoder_summary, "teacher": teacher_summary},
        "seconds": {"dataset": seconds.get("dataset", 0.0), "encoder": encoder_summary["seconds"],
                    "teacher": round(teacher_summary["seconds"], 1), "stages": seconds, "total": round(total, 1)},
        "threads": {"intra_op": per_thread, "encoder_shards": config.encoder.shards},
        "torch": torch.__version__,
    }


def build_world(config: WorldConfig | None = None, root: str | os.PathLike | None = None, *, force: bool = False,
                progress: bool = True, on_progress: ProgressCallback | None = None) -> World:
    """Generate the dataset, train the dual encoder and the teacher, and write the three repos and a
    manifest into ``root`` (default: :func:`default_world_root`). The folder appears complete or not at
    all. An existing world is reused unless ``force`` (reusing it, ``on_progress`` hears only
    ``("saving", 1.0, 0.0)``).

    ``progress``: terminal bars. ``on_progress(stage, fraction, seconds_left)`` (:data:`ProgressCallback`):
    for a page, called from the build's threads about every half second and whenever one of
    :data:`BUILD_STAGES` starts or ends. Keep it quick; an exception raised in it stops the build.

    The dual encoder trains in the calling thread as two shards side by side, the dataset and then the
    teacher in a helper thread beside it, each thread with half the intra-op threads. The same config
    and seed give the same world, whatever the timing."""
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
    tracker = BuildProgress(stage_costs(config), on_progress, bar if progress else None)
    try:
        _import_first(config)
        with intra_op_threads(per_thread), ThreadPoolExecutor(1, thread_name_prefix="infincond-world",
                                                               initializer=torch.set_num_threads,
                                                               initargs=(per_thread,)) as helper:
            side = helper.submit(_dataset_and_teacher, partial, config, progress, tracker)
            try:
                encoder_summary = train_dual_encoder(partial / "encoder", config.scenes, config.encoder, config.seed,
                                                     progress, report=tracker.update)
            except Aborted:
                side.result()  # the helper thread's own error
                raise
            except BaseException:
                tracker.abort()
                wait([side])
                raise
            (partial / "encoder" / "README.md").write_text(_card("encoder", config))
            teacher_summary = side.result()
        manifest = _manifest(config, encoder_summary, teacher_summary, tracker.seconds(),
                             time.perf_counter() - start, per_thread)
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
               progress: bool = True, on_progress: ProgressCallback | None = None) -> World:
    """The world at ``root`` (default: the default world's cache folder), built first when missing and
    ``build`` is true (``progress`` and ``on_progress`` as in :func:`build_world`)."""
    root = Path(root) if root is not None else default_world_root(config)
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        if not build:
            raise ConfigError(f"No Shapes world at {root}: run `infincond demo build` first.")
        return build_world(config, root, progress=progress, on_progress=on_progress)
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        if not build:
            raise ConfigError(f"The Shapes world at {root} is from an older version: rebuild it with "
                              "`infincond demo build --force`.")
        return build_world(config or WorldConfig.from_dict(manifest["config"]), root, force=True, progress=progress,
                           on_progress=on_progress)
    return World(root, WorldConfig.from_dict(manifest["config"]), manifest)
