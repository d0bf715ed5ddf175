"""ConceptStudent: the distilled student as a Hub-ready module that predicts from raw images.

image -> encoder vision tower -> region embeddings (R, D) -> cosine with the stored concept embeddings
(K, D) -> max over regions, clip at 0 -> scores (K) -> standardise -> W s + b -> logits (C)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import CommitInfo, ModelCard, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from .concepts.encoder import ConceptEncoder
from .concepts.presence import box_on_image, concept_presence, stored_regions
from .data import to_rgb
from .distill import DistillConfig, LinearStudent, softmax
from .errors import ConfigError, LoadError
from .features import FeatureSet
from .hub import hub_errors

#: Files saved beside the weights, and the attribute each one fills on load.
EXTRA_FILES = {"metrics.json": "metrics", "tuning_log.json": "tuning_log"}


def _json_clean(value: object) -> object:
    """Round-trip through JSON so only serialisable values reach the mixin's config.json."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


@dataclass
class Predictions:
    """Predictions for N images: logits and probabilities (N, C), class ids (N,) and their names."""

    logits: np.ndarray
    probs: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]


@dataclass
class ConceptContribution:
    """One concept's part in a class score: contribution = weight * standardised presence score."""

    concept: str
    weight: float
    score: float
    contribution: float
    box: tuple[float, float, float, float]


@dataclass
class Explanation:
    """Why the student gave ``class_name`` to an image: its probability and top contributing concepts."""

    class_id: int
    class_name: str
    prob: float
    contributions: list[ConceptContribution]


class ConceptStudent(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="infincond",
    pipeline_tag="image-classification",
    tags=["infincond", "concept-bottleneck", "knowledge-distillation", "interpretability"],
):
    """A sparse linear model over concept presence scores. Load with ``from_pretrained`` (strict)."""

    def __init__(self, concepts: list[str], class_names: list[str], embed_dim: int, encoder: dict,
                 distill: dict | None = None, provenance: dict | None = None) -> None:
        super().__init__()
        if not concepts or len(class_names) < 2:
            raise ConfigError("A student needs at least one concept and two classes.")
        self.concepts = list(concepts)
        self.class_names = list(class_names)
        self.encoder_info = dict(encoder)
        self.distill_info = dict(distill or {})
        self.provenance = dict(provenance or {})
        k, c = len(concepts), len(class_names)
        self.weight = nn.Parameter(torch.zeros(c, k, dtype=torch.float64), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(c, dtype=torch.float64), requires_grad=False)
        self.register_buffer("concept_embeddings", torch.zeros(k, embed_dim))
        self.register_buffer("score_mean", torch.zeros(k))
        self.register_buffer("score_std", torch.ones(k))
        self._encoder: ConceptEncoder | None = None
        #: Metric snapshot of the student (fidelity, accuracy, per class, ...), saved as ``metrics.json``.
        self.metrics: dict | None = None
        #: The full, replayable tuning log (``TuningSession.export_log``), saved as ``tuning_log.json``.
        self.tuning_log: dict | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: LinearStudent, features: FeatureSet, encoder: ConceptEncoder | None = None,
                    provenance: dict | None = None, metrics: dict | None = None,
                    tuning_log: dict | None = None) -> ConceptStudent:
        """Wrap a fitted :class:`LinearStudent` with the concepts and encoder reference of its FeatureSet;
        ``provenance`` adds entries (e.g. the tuning edits) to what the FeatureSet records; ``metrics`` and
        ``tuning_log`` travel with the student (files beside the weights, and the model card)."""
        prov = {**features.provenance, **(provenance or {})}
        student = cls(
            concepts=list(features.concepts),
            class_names=list(features.class_names),
            embed_dim=int(features.concept_embeddings.shape[1]),
            encoder=_json_clean(prov.get("encoder", {})),
            distill=_json_clean(linear.config.to_dict()),
            provenance=_json_clean({k: v for k, v in prov.items() if k != "encoder"}),
        )
        with torch.no_grad():
            student.weight.copy_(torch.from_numpy(np.asarray(linear.weight, dtype=np.float64)))
            student.bias.copy_(torch.from_numpy(np.asarray(linear.bias, dtype=np.float64)))
            student.concept_embeddings.copy_(torch.from_numpy(features.concept_embeddings))
            student.score_mean.copy_(torch.from_numpy(np.asarray(linear.score_mean, dtype=np.float32)))
            student.score_std.copy_(torch.from_numpy(np.asarray(linear.score_std, dtype=np.float32)))
        student._encoder = encoder
        student.metrics = _json_clean(metrics) if metrics is not None else None
        student.tuning_log = _json_clean(tuning_log) if tuning_log is not None else None
        return student

    def to_linear(self) -> LinearStudent:
        """The weights as a :class:`LinearStudent` (for metrics and refits on concept scores)."""
        return LinearStudent(self.weight.detach().numpy().copy(), self.bias.detach().numpy().copy(),
                             self.score_mean.numpy().copy(), self.score_std.numpy().copy(),
                             DistillConfig(**self.distill_info) if self.distill_info else DistillConfig())

    # -- the Hub: save, load, push ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> ConceptStudent:
        """Load a student from a Hub repo id or a local folder (weights strictly checked); the encoder's
        vision tower is loaded on first prediction, by its recorded repo id and revision."""
        ref = str(pretrained_model_name_or_path)
        with hub_errors("load the student", ref):
            # The mixin treats any failure to fetch config.json as "no config"; fetching it first surfaces
            # the real reason (missing or private repo, bad token, no network) as a clear error.
            if Path(ref).is_dir():
                if not (Path(ref) / "config.json").exists():
                    raise LoadError(f"{ref} holds no config.json: it is not a saved InFiConD student.")
            else:
                options = ("revision", "cache_dir", "token", "force_download", "local_files_only")
                hf_hub_download(ref, "config.json", **{k: kwargs[k] for k in options if k in kwargs})
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool,
                         local_files_only: bool, token, strict: bool = True, **kwargs):  # strict unless asked
        student = super()._from_pretrained(model_id=model_id, revision=revision, cache_dir=cache_dir,
                                           force_download=force_download, local_files_only=local_files_only,
                                           token=token, strict=strict, **kwargs)
        for name, attribute in EXTRA_FILES.items():
            path = Path(model_id) / name
            if not Path(model_id).is_dir():
                try:
                    path = Path(hf_hub_download(model_id, name, revision=revision, cache_dir=cache_dir, token=token,
                                                force_download=force_download, local_files_only=local_files_only))
                except EntryNotFoundError:  # an older or hand-made student: these files are optional
                    continue
            if path.is_file():
                setattr(student, attribute, json.loads(path.read_text()))
        return student

    def _save_pretrained(self, save_directory: Path) -> None:
        folder = Path(save_directory)
        super()._save_pretrained(folder)
        # A readable copy of the vocabulary beside the weights (the embeddings are in the safetensors).
        (folder / "concepts.json").write_text(json.dumps(
            {"concepts": self.concepts, "class_names": self.class_names}, indent=1))
        for name, attribute in EXTRA_FILES.items():
            value = getattr(self, attribute)
            if value is not None:
                (folder / name).write_text(json.dumps(value, indent=1))
            else:  # a re-save into the same folder must not leave another student's log or metrics behind
                (folder / name).unlink(missing_ok=True)
        # The mixin writes the card only where none exists: drop a previous save's, so it is regenerated.
        (folder / "README.md").unlink(missing_ok=True)

    def generate_model_card(self, repo_id: str | None = None, **_) -> ModelCard:
        """The model card (``README.md``): see :func:`infincond.card.model_card`."""
        from .card import model_card

        return model_card(self, repo_id)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Push an InFiConD student", branch: str | None = None,
                    **kwargs) -> CommitInfo:
        """Push the student in one commit: ``model.safetensors``, ``config.json``, ``concepts.json``,
        ``metrics.json``, ``tuning_log.json`` and the ``README.md`` model card. The repo is created when
        missing (``private`` applies then); files already there that the student does not write are kept.

        Returns the commit info (a URL string; ``.repo_url`` is the repo's). Hub failures raise
        :class:`~infincond.errors.HubError` with what to check.
        """
        with hub_errors("push the student", repo_id), tqdm(total=1, desc=f"Pushing to {repo_id}") as bar:
            info = super().push_to_hub(repo_id, private=private, token=token, commit_message=commit_message,
                                       branch=branch, model_card_kwargs={"repo_id": repo_id}, **kwargs)
            bar.update()
        return info

    # -- inference ----------------------------------------------------------------------------
    @property
    def encoder(self) -> ConceptEncoder:
        """The encoder's vision tower, loaded on first use from the recorded repo id and revision."""
        if self._encoder is None:
            info = self.encoder_info
            revision = info.get("revision")
            if revision is not None and str(revision).startswith("local-"):
                revision = None  # a local folder's content stamp, not a git revision
            self._encoder = ConceptEncoder.from_pretrained(
                info["repo_id"], revision, region_mode=info.get("region_mode", "auto"),
                grid_size=int(info.get("grid_size", 2)), vision_only=True)
        return self._encoder

    def set_encoder(self, encoder: ConceptEncoder) -> None:
        """Use an already loaded encoder (it must be the one the student was distilled with)."""
        self._encoder = encoder

    def forward(self, concept_scores: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) float64 from concept scores (B, K)."""
        standardised = (concept_scores.float() - self.score_mean) / self.score_std
        return standardised.double() @ self.weight.T + self.bias

    @torch.inference_mode()
    def concept_scores(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Presence scores (B, K) and arg-max regions (B, K) of the student's concepts in raw images."""
        regions = self.encoder.encode_regions([to_rgb(im) for im in images])
        scores, best = concept_presence(stored_regions(regions.embeddings), self.concept_embeddings)
        return scores.cpu().numpy(), best.cpu().numpy()

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image] | Image.Image, batch_size: int = 32) -> Predictions:
        """Class predictions for raw PIL images."""
        images = [images] if isinstance(images, Image.Image) else list(images)
        logits = np.concatenate([
            self(torch.from_numpy(self.concept_scores(images[i : i + batch_size])[0])).numpy()
            for i in range(0, len(images), batch_size)
        ]) if images else np.zeros((0, len(self.class_names)))
        ids = logits.argmax(1)
        return Predictions(logits, softmax(logits), ids, [self.class_names[i] for i in ids])

    @torch.inference_mode()
    def explain(self, image: Image.Image, top_k: int = 5, class_id: int | None = None) -> Explanation:
        """Top contributing concepts to one class (the predicted one by default), with their regions."""
        scores, best = self.concept_scores([image])
        logits = self(torch.from_numpy(scores)).numpy()[0]
        class_id = int(logits.argmax()) if class_id is None else int(class_id)
        standardised = (scores[0] - self.score_mean.numpy()) / self.score_std.numpy()
        weights = self.weight[class_id].numpy()
        contributions = weights * standardised
        active = np.nonzero(weights)[0]
        order = active[np.argsort(-np.abs(contributions[active]))][:top_k]
        boxes = self.encoder.region_boxes
        size = to_rgb(image).size
        items = [ConceptContribution(self.concepts[k], float(weights[k]), float(scores[0, k]), float(contributions[k]),
                                     box_on_image(boxes[best[0, k]], size)) for k in order]
        return Explanation(class_id, self.class_names[class_id], float(softmax(logits[None])[0, class_id]), items)
