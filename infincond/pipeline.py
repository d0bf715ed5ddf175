"""The one orchestration path, stage by stage: load the inputs, extract concept scores (cached), distil,
evaluate. The CLI, the app's workspace and the demo world's check all go through it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm.auto import tqdm

from .concepts.corpus import ConceptCorpus
from .concepts.encoder import ConceptEncoder
from .data import DataConfig, ImageSource
from .distill import DistillConfig, distill
from .errors import ColumnDetectionError, ConfigError
from .extract.runtime import processes
from .extraction import extract_features, fingerprint
from .features import ExtractConfig, FeatureSet, map_labels
from .groups import groups_for
from .hub import ref_key
from .linear import LinearStudent
from .metrics import Metrics, evaluate_student
from .shared import SharedCache, freeze
from .student import ConceptStudent
from .teacher import Teacher


@dataclass
class Inputs:
    """What a distillation starts from: the sampled dataset, the teacher, the encoder and the corpus,
    with the extraction settings the encoder was loaded for."""

    source: ImageSource
    teacher: Teacher
    encoder: ConceptEncoder
    corpus: ConceptCorpus
    extract: ExtractConfig


@dataclass
class DistillationRun:
    """Everything one distillation produced, kept together so that any view can trace it back."""

    source: ImageSource
    teacher: Teacher
    encoder: ConceptEncoder
    features: FeatureSet
    linear: LinearStudent
    student: ConceptStudent
    metrics: Metrics


def _through(cache: SharedCache | None, kind: str, key: Callable[[], Hashable], load: Callable):
    """``load()``, through ``cache`` under ``key()`` when there is one (keys can cost: a local folder's
    content stamp, a fingerprint; without a cache they are not made)."""
    return cache.get(kind, key(), load) if cache is not None else load()


def load_inputs(teacher: str, dataset: str | DataConfig, encoder: str,
                corpus: ConceptCorpus | str | os.PathLike | Sequence[str] | None = None, *,
                extract: ExtractConfig | None = None, device: str | None = None, progress: bool = True,
                cache: SharedCache | None = None) -> Inputs:
    """Load the dataset, the teacher and the encoder (repo ids or paths) and resolve the corpus; the
    corpus is checked first, so that a bad one fails before anything heavy is loaded. With a ``cache``
    (the app's), models and datasets already loaded by another session are shared, not loaded again.
    ``device`` overrides ``extract.device``."""
    data = dataset if isinstance(dataset, DataConfig) else DataConfig(dataset=os.fspath(dataset))
    extract = replace(extract or ExtractConfig(), **({"device": device} if device is not None else {}))  # checked
    device = processes(extract.device).device  # under `accelerate launch`, this process's own device
    concept_corpus = ConceptCorpus.resolve(corpus)
    with tqdm(total=3, desc="Loading", disable=not progress, leave=False) as steps:
        source = _through(cache, "source",
                          lambda: (json.dumps(data.to_dict(), sort_keys=True), ref_key(data.dataset, data.revision)),
                          lambda: ImageSource.load(data))
        steps.update()
        names = tuple(source.label_names or ())
        teacher_model = _through(cache, "teacher", lambda: (ref_key(teacher), device, names),
                                 lambda: Teacher.from_pretrained(teacher, dataset_label_names=source.label_names,
                                                                 device=device))
        steps.update()
        concept_encoder = _through(cache, "encoder",
                                   lambda: (ref_key(encoder), extract.region_mode, extract.grid_size, device),
                                   lambda: ConceptEncoder.from_pretrained(encoder, region_mode=extract.region_mode,
                                                                          grid_size=extract.grid_size, device=device))
        steps.update()
    return Inputs(source, teacher_model, concept_encoder, concept_corpus, extract)


def extract_concepts(inputs: Inputs, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                     cache: SharedCache | None = None) -> FeatureSet:
    """Concept scores, teacher logits and labels of the sample (reused from the disk cache when the inputs
    match; with a ``cache``, the same FeatureSet object, read-only, for every session)."""
    def load() -> FeatureSet:
        features = extract_features(inputs.source, inputs.teacher, inputs.encoder, inputs.corpus, inputs.extract,
                                    cache_dir, progress)
        if cache is not None:
            freeze(*(value for value in vars(features).values() if isinstance(value, np.ndarray)))
        return features

    def key() -> tuple:
        return (fingerprint(inputs.encoder, inputs.teacher, inputs.source, inputs.corpus, inputs.extract),
                os.fspath(cache_dir) if cache_dir else None)

    return _through(cache, "features", key, load)


def on_split(inputs: Inputs, split: str, cache: SharedCache | None = None) -> Inputs:
    """The same teacher, encoder, corpus and settings on every image of another split of the dataset (a
    balanced test split to audit on, say); a split without labels among the teacher's classes is a
    ConfigError, since what is measured there is measured against labels."""
    data = replace(inputs.source.config, split=split, samples=None)
    unlabelled = (f"The split {split!r} of {data.dataset!r} has no labels among the teacher's classes, so nothing can "
                  "be measured on it: pass a labelled split (CLI: --audit-split), or none to use the validation rows.")
    try:
        source = _through(
            cache,
            "source",
            lambda: (json.dumps(data.to_dict(), sort_keys=True), ref_key(data.dataset, data.revision)),
            lambda: ImageSource.load(data),
        )
    except ColumnDetectionError as error:
        if "label column" not in str(error).lower():
            raise
        raise ConfigError(unlabelled) from error
    mapped = map_labels(source.label_names, inputs.teacher.class_names)
    if source.labels is None or mapped is None or not (mapped[source.labels[source.labels >= 0]] >= 0).any():
        raise ConfigError(unlabelled)
    return replace(inputs, source=source)


def run_distillation(
    teacher: str,
    dataset: str | DataConfig,
    encoder: str,
    corpus: ConceptCorpus | str | os.PathLike | Sequence[str] | None = None,
    *,
    extract: ExtractConfig | None = None,
    distill_config: DistillConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
    group_column: str | None = None,
) -> DistillationRun:
    """Load teacher, dataset and encoder (repo ids or paths), extract concept scores (cached), distil a
    student and evaluate it on the validation split (per group of class x ``group_column`` when named, a
    dataset column or "concept:<name>", see :func:`~infincond.groups.groups_for`: the worst group too)."""
    inputs = load_inputs(teacher, dataset, encoder, corpus, extract=extract, device=device, progress=progress)
    features = extract_concepts(inputs, cache_dir, progress)
    groups = groups_for(features, inputs.source, group_column)  # before the long work: a bad column fails now
    linear = distill(features, distill_config, progress=progress)
    metrics = evaluate_student(features, linear, groups=groups)
    student = ConceptStudent.from_linear(linear, features, inputs.encoder, metrics=metrics.to_dict())
    return DistillationRun(inputs.source, inputs.teacher, inputs.encoder, features, linear, student, metrics)
