"""FeatureSet: concept scores, teacher logits and labels of a sampled dataset, with everything needed
to trace how they were made; cached on disk under a fingerprint of all inputs and settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_choice, check_integer, check_number
from .concepts.corpus import (
    DEFAULT_TEMPLATE,
    ConceptCorpus,
    check_template,
    near_duplicate_mask,
    normalize_concept,
)
from .concepts.encoder import REGION_MODES, ConceptEncoder, RegionMode
from .concepts.presence import concept_presence
from .data import ImageSource
from .teacher import Teacher

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$INFINCOND_CACHE`` or ``~/.cache/infincond``."""
    return Path(os.environ.get("INFINCOND_CACHE", Path.home() / ".cache" / "infincond")).expanduser()


@dataclass
class ExtractConfig:
    """How concept scores are extracted.

    ``region_mode``: "auto" (patch tokens when the encoder supports it, else a grid of crops), "dense",
    "grid" or "whole". ``dedup_threshold``: drop concepts whose text embeddings are this close (cosine)
    to an earlier one; None keeps them all.
    """

    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Prompt template, with one {} for the concept."})
    region_mode: RegionMode = field(default="auto", metadata={"help": "Where concepts are looked for: 'auto', "
                                                                      "'dense' (patches), 'grid' or 'whole'."})
    grid_size: int = field(default=2, metadata={"help": "Side of the grid of crops in 'grid' mode."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    dedup_threshold: float | None = field(default=None, metadata={"help": "Drop concepts this close (cosine) to "
                                                                          "an earlier one; None keeps all."})

    def __post_init__(self) -> None:
        check_template(self.template)
        check_choice("region_mode", self.region_mode, REGION_MODES)
        self.grid_size = check_integer("grid_size", self.grid_size, 1, 16)
        self.batch_size = check_integer("batch_size", self.batch_size, 1)
        if self.dedup_threshold is not None:
            self.dedup_threshold = check_number("dedup_threshold", self.dedup_threshold, 0.0, 1.0, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)


def map_labels(dataset_label_names: Sequence[str] | None, class_names: Sequence[str]) -> np.ndarray | None:
    """For each dataset label id, the teacher class with the same (normalised) name, or -1. Shape (L,)."""
    if dataset_label_names is None:
        return None
    lookup = {normalize_concept(name): c for c, name in enumerate(class_names)}
    return np.asarray([lookup.get(normalize_concept(name), -1) for name in dataset_label_names], dtype=np.int64)


@dataclass
class FeatureSet:
    """Everything distillation needs, for N images, K concepts and C teacher classes.

    concept_scores (N, K) float32 in [0, 1]; best_region (N, K) int16 indexes region_boxes (R, 4);
    teacher_logits (N, C) float32; labels (N,) int64 dataset label ids, -1 when unknown;
    image_ids (N,) int64 rows of the dataset split; is_val (N,) bool; concept_embeddings (K, D).
    """

    concept_scores: np.ndarray
    best_region: np.ndarray
    region_boxes: np.ndarray
    teacher_logits: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    is_val: np.ndarray
    concept_embeddings: np.ndarray
    concepts: list[str]
    concept_sources: list[str]
    class_names: list[str]
    dataset_label_names: list[str] | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def num_concepts(self) -> int:
        return self.concept_scores.shape[1]

    @property
    def num_classes(self) -> int:
        return self.teacher_logits.shape[1]

    @property
    def label_to_class(self) -> np.ndarray | None:
        """Dataset label id -> teacher class id (-1 when the names do not match). Shape (L,)."""
        return map_labels(self.dataset_label_names, self.class_names)

    @property
    def labels_as_classes(self) -> np.ndarray:
        """Labels (N,) expressed as teacher classes; -1 where unknown or not in the teacher's label space."""
        mapping = self.label_to_class
        if mapping is None:
            return np.full(len(self.labels), -1, dtype=np.int64)
        return np.where(self.labels >= 0, mapping[np.clip(self.labels, 0, None)], -1)

    @property
    def fingerprint(self) -> str:
        return str(self.provenance.get("fingerprint", ""))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``arrays.npz`` and ``meta.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in ("concept_scores", "best_region", "region_boxes", "teacher_logits",
                                                  "labels", "image_ids", "is_val", "concept_embeddings")}
        tmp = folder / "arrays.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(folder / "arrays.npz")
        meta = {"format_version": FORMAT_VERSION, "concepts": self.concepts, "concept_sources": self.concept_sources,
                "class_names": self.class_names, "dataset_label_names": self.dataset_label_names,
                "provenance": self.provenance}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FeatureSet:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "arrays.npz") as arrays:
            data = {k: arrays[k] for k in arrays.files}
        return cls(**data, concepts=meta["concepts"], concept_sources=meta["concept_sources"],
                   class_names=meta["class_names"], dataset_label_names=meta["dataset_label_names"],
                   provenance=meta["provenance"])


def fingerprint(encoder: ConceptEncoder, teacher: Teacher, source: ImageSource, corpus: ConceptCorpus,
                config: ExtractConfig) -> str:
    """Hash of every input that changes the features: models and their revisions, dataset and sample,
    corpus, extraction settings (batch size excluded: it does not change the result)."""
    settings = config.to_dict()
    settings.pop("batch_size")
    key = {
        "version": FORMAT_VERSION,
        "encoder": [encoder.repo_id, encoder.revision, encoder.region_mode],
        "teacher": [teacher.repo_id, teacher.revision],
        "dataset": source.describe(),
        "corpus": corpus.fingerprint(),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def extract_features(source: ImageSource, teacher: Teacher, encoder: ConceptEncoder, corpus: ConceptCorpus,
                     config: ExtractConfig | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> FeatureSet:
    """Run teacher and encoder over the sample; reuse the cached FeatureSet when the inputs are the same.

    ``cache_dir=None`` uses :func:`default_cache_dir`; pass ``cache_dir=False`` to disable caching.
    """
    config = config or ExtractConfig()
    key = fingerprint(encoder, teacher, source, corpus, config)
    folder = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / "features" / key
    if folder is not None and (folder / "meta.json").exists():
        return FeatureSet.load(folder)

    concept_embeddings = encoder.encode_text(corpus.prompts(config.template))
    if config.dedup_threshold is not None:
        keep = near_duplicate_mask(concept_embeddings.numpy(), config.dedup_threshold)
        corpus = corpus.select(np.nonzero(keep)[0])
        concept_embeddings = concept_embeddings[torch.from_numpy(keep)]

    n, k = len(source), len(corpus)
    concept_scores = np.zeros((n, k), dtype=np.float32)
    best_region = np.zeros((n, k), dtype=np.int16)
    teacher_logits = np.zeros((n, teacher.num_classes), dtype=np.float32)
    bar = tqdm(total=n, desc="Extracting concepts", unit="img", disable=not progress)
    for positions, images in source.batches(config.batch_size):
        regions = encoder.encode_regions(images)
        scores, best = concept_presence(regions.embeddings, concept_embeddings)
        concept_scores[positions] = scores.cpu().numpy()
        best_region[positions] = best.cpu().numpy().astype(np.int16)
        teacher_logits[positions] = teacher.logits(images)
        bar.update(len(positions))
    bar.close()

    features = FeatureSet(
        concept_scores=concept_scores,
        best_region=best_region,
        region_boxes=encoder.region_boxes,
        teacher_logits=teacher_logits,
        labels=source.labels if source.labels is not None else np.full(n, -1, dtype=np.int64),
        image_ids=source.image_ids,
        is_val=source.is_val,
        concept_embeddings=concept_embeddings.numpy().astype(np.float32),
        concepts=list(corpus.concepts),
        concept_sources=list(corpus.sources),
        class_names=list(teacher.class_names),
        dataset_label_names=source.label_names,
        provenance={
            "fingerprint": key,
            "encoder": {"repo_id": encoder.repo_id, "revision": encoder.revision, "region_mode": encoder.region_mode,
                        "grid_size": encoder.grid_size},
            "teacher": {"repo_id": teacher.repo_id, "revision": teacher.revision},
            "dataset": source.describe(),
            "extract": config.to_dict(),
        },
    )
    if folder is not None:
        features.save(folder)
    return features
