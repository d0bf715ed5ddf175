"""FeatureSet: concept scores, teacher logits and labels of a sampled dataset, with everything needed
to trace how they were made; cached on disk under a fingerprint of all inputs and settings.

On disk a FeatureSet is a folder of ``.npy`` arrays and ``meta.json``. Loading memory-maps the arrays that
grow with the number of images times concepts or regions (``concept_scores``, ``best_region``,
``teacher_logits``, ``region_embeddings``) read-only, so a large FeatureSet is paged in on use rather
than read into RAM; copy one (``np.array(x)``) to modify it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

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
from .errors import ConfigError
from .extract.runtime import PRECISIONS, Precision, resolve_device, resolve_precision
from .storage import atomic_write, atomic_write_text

FORMAT_VERSION = 2
#: Region embeddings are kept (fp16) by default while they take at most this much disk.
KEEP_REGIONS_MAX_BYTES = 4 * 1024**3
ARRAYS = ("concept_scores", "best_region", "region_boxes", "teacher_logits", "labels", "image_ids", "is_val",
          "concept_embeddings", "region_embeddings")
#: Arrays that grow with N x K (or N x R x D): memory-mapped, read-only, on load.
MAPPED_ARRAYS = ("concept_scores", "best_region", "teacher_logits", "region_embeddings")


def default_cache_dir() -> Path:
    """``$INFINCOND_CACHE`` or ``~/.cache/infincond``."""
    return Path(os.environ.get("INFINCOND_CACHE", Path.home() / ".cache" / "infincond")).expanduser()


@dataclass
class ExtractConfig:
    """How concept scores are extracted.

    ``region_mode``: "auto" (patch tokens when the encoder supports it, else a grid of crops), "dense",
    "grid" or "whole". ``dedup_threshold``: drop concepts whose text embeddings are this close (cosine)
    to an earlier one; None keeps them all.

    The engine (:mod:`infincond.extract`): ``num_workers`` input workers (None = one per core, none for a run
    under 4 batches; 0 = decode in the main process); ``device`` "auto" (CUDA, MPS, CPU) or a torch device;
    ``precision`` "auto" (bf16 autocast on GPUs that support it, fp16 on other GPUs, fp32 on the CPU), "fp32",
    "bf16" or "fp16"; results are written every ``shard_size`` images (a run resumes after its last shard);
    ``keep_regions`` keeps the region embeddings (fp16) for :meth:`FeatureSet.with_concepts` (None = when they
    take at most ``KEEP_REGIONS_MAX_BYTES``); ``draft`` decodes JPEGs at least twice the size the models need
    at a reduced DCT scale (faster on large photos, not bit-exact: see the README).
    """

    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Prompt template, with one {} for the concept."})
    region_mode: RegionMode = field(default="auto", metadata={"help": "Where concepts are looked for: 'auto', "
                                                                      "'dense' (patches), 'grid' or 'whole'."})
    grid_size: int = field(default=2, metadata={"help": "Side of the grid of crops in 'grid' mode."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    dedup_threshold: float | None = field(default=None, metadata={"help": "Drop concepts this close (cosine) to "
                                                                          "an earlier one; None keeps all."})
    num_workers: int | None = field(default=None, metadata={"help": "Input workers decoding and preprocessing "
                                                                    "(None: one per core, none for a run under 4 "
                                                                    "batches; 0: in the main process)."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."})
    precision: Precision = field(default="auto", metadata={"help": "auto: bf16 autocast on GPUs that support it, "
                                                                   "fp16 on other GPUs, fp32 on the CPU."})
    shard_size: int = field(default=1024, metadata={"help": "Images per shard written; an interrupted run resumes "
                                                            "after its last complete shard."})
    keep_regions: bool | None = field(default=None, metadata={"help": "Keep region embeddings (fp16) to add "
                                                                      "concepts later without an image pass (None: "
                                                                      "while they take at most 4 GiB)."})
    draft: bool = field(default=False, metadata={"help": "Decode large JPEGs at a reduced DCT scale (faster, "
                                                         "not bit-exact)."})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a ConfigError for a setting that cannot be used (called on construction)."""
        check_template(self.template)
        check_choice("region_mode", self.region_mode, REGION_MODES)
        self.grid_size = check_integer("grid_size", self.grid_size, 1, 16)
        self.batch_size = check_integer("batch_size", self.batch_size, 1)
        if self.dedup_threshold is not None:
            self.dedup_threshold = check_number("dedup_threshold", self.dedup_threshold, 0.0, 1.0, low_open=True)
        if self.num_workers is not None:
            self.num_workers = check_integer("num_workers", self.num_workers, 0, 256)
        self.shard_size = check_integer("shard_size", self.shard_size, 1)
        check_choice("precision", self.precision, PRECISIONS)

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_precision(self) -> str:
        """The precision this config runs at on this machine ("auto" resolved)."""
        return resolve_precision(self.precision, resolve_device(self.device))

    def resolved_keep_regions(self, n_images: int, n_regions: int, embed_dim: int) -> bool:
        """Whether region embeddings are kept for N images of R regions of dimension D."""
        if self.keep_regions is not None:
            return bool(self.keep_regions)
        return n_images * n_regions * embed_dim * 2 <= KEEP_REGIONS_MAX_BYTES


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
    image_ids (N,) int64 rows of the dataset split; is_val (N,) bool; concept_embeddings (K, D);
    region_embeddings (N, R, D) float16 or None (kept for :meth:`with_concepts`). Images that could not
    be read are not among the N rows: ``provenance["failed_images"]`` lists them.
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
    region_embeddings: np.ndarray | None = None
    folder: Path | None = None  # where it was loaded from, if anywhere

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
        """Write one ``.npy`` per array and ``meta.json`` (last, so a folder with it is complete). An array
        already memory-mapped from its file in ``folder`` is left where it is."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        present = [name for name in ARRAYS if getattr(self, name) is not None]
        for name in present:
            array, path = getattr(self, name), folder / f"{name}.npy"
            if isinstance(array, np.memmap) and array.filename and Path(array.filename).resolve() == path.resolve():
                continue
            atomic_write(path, lambda f, a=array: np.save(f, np.asarray(a), allow_pickle=False))
        meta = {"format_version": FORMAT_VERSION, "arrays": present, "concepts": self.concepts,
                "concept_sources": self.concept_sources, "class_names": self.class_names,
                "dataset_label_names": self.dataset_label_names, "provenance": self.provenance}
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = True) -> FeatureSet:
        """Load a saved FeatureSet; with ``mmap`` the N x K and N x R x D arrays are memory-mapped read-only."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{folder} holds features in format {meta.get('format_version', 1)}, not "
                              f"{FORMAT_VERSION}: extract them again (this version reads its own format only).")
        data = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap and name in MAPPED_ARRAYS else None,
                              allow_pickle=False) for name in meta["arrays"]}
        return cls(**data, concepts=meta["concepts"], concept_sources=meta["concept_sources"],
                   class_names=meta["class_names"], dataset_label_names=meta["dataset_label_names"],
                   provenance=meta["provenance"], folder=folder)

    def with_concepts(self, concepts: Sequence[str] | ConceptCorpus, encoder: ConceptEncoder,
                      chunk_bytes: int = 256 * 1024**2) -> FeatureSet:
        """This FeatureSet with more concepts, scored on the kept region embeddings: the text tower embeds
        them, presence is computed in chunks of images, no image is read. The new columns equal what a
        full extraction with the larger corpus gives. Concepts already present are skipped."""
        if self.region_embeddings is None:
            raise ConfigError("These features were extracted without keeping region embeddings, so concepts cannot "
                              "be added without an image pass: extract with keep_regions=True (CLI: --keep-regions), "
                              "or extract again with the larger corpus.")
        made_by = self.provenance.get("encoder", {})
        if [made_by.get("repo_id"), made_by.get("revision"), made_by.get("region_mode")] != \
                [encoder.repo_id, encoder.revision, encoder.region_mode]:
            raise ConfigError(
                f"These regions were embedded by {made_by.get('repo_id')!r} ({made_by.get('region_mode')}); "
                "pass that encoder to add concepts."
            )
        added = (ConceptCorpus.resolve(concepts) if not isinstance(concepts, str)
                 else ConceptCorpus.from_list([concepts]))
        combined = ConceptCorpus(tuple(self.concepts), tuple(self.concept_sources)) + added
        new = combined.select(range(self.num_concepts, len(combined)))
        template = self.provenance.get("extract", {}).get("template", DEFAULT_TEMPLATE)
        embeddings = (encoder.encode_text(new.prompts(template)) if len(new)
                      else torch.zeros(0, self.concept_embeddings.shape[1]))
        threshold = self.provenance.get("extract", {}).get("dedup_threshold")
        if threshold is not None and len(new):
            keep = near_duplicate_mask(np.concatenate([self.concept_embeddings, embeddings.numpy()]),
                                       threshold)[self.num_concepts:]
            new, embeddings = new.select(np.nonzero(keep)[0]), embeddings[torch.from_numpy(keep)]
        scores, best = self._presence_on_kept_regions(embeddings, chunk_bytes)
        added_names = list(new.concepts)
        key = hashlib.sha256(json.dumps([self.fingerprint, added_names, template]).encode()).hexdigest()[:24]
        provenance = {**self.provenance, "fingerprint": key,
                      "with_concepts": [*self.provenance.get("with_concepts", []),
                                        {"base_fingerprint": self.fingerprint, "added": added_names,
                                         "scored_on": "kept region embeddings (no image pass)"}]}
        return replace(
            self,
            concept_scores=np.concatenate([self.concept_scores, scores], 1),
            best_region=np.concatenate([self.best_region, best], 1),
            concept_embeddings=np.concatenate([self.concept_embeddings, embeddings.numpy().astype(np.float32)]),
            concepts=[*self.concepts, *added_names],
            concept_sources=[*self.concept_sources, *new.sources],
            provenance=provenance,
            folder=None,
        )

    def _presence_on_kept_regions(self, concept_embeddings: torch.Tensor,
                                  chunk_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        """Presence (N, k) float32 and best region (N, k) int16 of k concepts on the kept regions."""
        n, r, d = self.region_embeddings.shape
        k = len(concept_embeddings)
        scores, best = np.zeros((n, k), dtype=np.float32), np.zeros((n, k), dtype=np.int16)
        step = max(1, chunk_bytes // max(1, r * max(d, k) * 4))
        for start in range(0, n if k else 0, step):
            regions = torch.from_numpy(np.array(self.region_embeddings[start : start + step]))  # a writable copy
            chunk_scores, chunk_best = concept_presence(regions, concept_embeddings)
            scores[start : start + step] = chunk_scores.numpy()
            best[start : start + step] = chunk_best.numpy().astype(np.int16)
        return scores, best
