"""The whole pipeline in one call: load, extract concepts, distil, evaluate. The CLI and the app use it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from .concepts.corpus import ConceptCorpus
from .concepts.encoder import ConceptEncoder
from .data import DataConfig, ImageSource
from .distill import DistillConfig, LinearStudent, distill
from .extract.runtime import processes
from .features import ExtractConfig, FeatureSet, extract_features
from .metrics import Metrics, evaluate_student, snapshot
from .student import ConceptStudent
from .teacher import Teacher


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


def load_and_extract(
    teacher: str,
    dataset: str | DataConfig,
    encoder: str,
    corpus: ConceptCorpus | str | os.PathLike | Sequence[str] | None = None,
    *,
    extract: ExtractConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> tuple[ImageSource, Teacher, ConceptEncoder, FeatureSet]:
    """Load teacher, dataset and encoder (repo ids or paths) and extract concept scores (cached). ``device``
    overrides ``extract.device``; under ``accelerate launch`` each process loads onto its own device."""
    data = dataset if isinstance(dataset, DataConfig) else DataConfig(dataset=os.fspath(dataset))
    extract = extract or ExtractConfig()
    if device is not None:
        extract = replace(extract, device=device)
    extract.check()
    model_device = processes(extract.device).device
    steps = tqdm(total=4, desc="Loading", disable=not progress, leave=False)
    source = ImageSource.load(data)
    steps.update()
    teacher_model = Teacher.from_pretrained(teacher, dataset_label_names=source.label_names, device=model_device)
    steps.update()
    concept_encoder = ConceptEncoder.from_pretrained(encoder, region_mode=extract.region_mode,
                                                     grid_size=extract.grid_size, device=model_device)
    steps.update()
    concept_corpus = ConceptCorpus.resolve(corpus)
    steps.update()
    steps.close()
    features = extract_features(source, teacher_model, concept_encoder, concept_corpus, extract, cache_dir, progress)
    return source, teacher_model, concept_encoder, features


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
) -> DistillationRun:
    """Load teacher, dataset and encoder (repo ids or paths), extract concept scores (cached), distil a
    student and evaluate it on the validation split."""
    source, teacher_model, concept_encoder, features = load_and_extract(
        teacher, dataset, encoder, corpus, extract=extract, cache_dir=cache_dir, device=device, progress=progress)
    linear = distill(features, distill_config, progress=progress)
    metrics = evaluate_student(features, linear)
    student = ConceptStudent.from_linear(linear, features, concept_encoder, metrics=snapshot(metrics))
    return DistillationRun(source, teacher_model, concept_encoder, features, linear, student, metrics)
