"""ConceptStudent: the distilled student as a Hub model that predicts from raw images.

image -> encoder vision tower -> region embeddings (R, D) -> cosine with the stored concept embeddings
(K, D) -> max over regions, clip at 0 -> scores (K) -> the :class:`~infincond.linear.LinearStudent` -> logits (C)

It is a ``ModelHubMixin`` composed over a LinearStudent: its ``__init__`` arguments (concepts, classes, the
encoder's reference, the distillation settings, provenance) are the Hub's ``config.json`` (dataclasses
encoded by the mixin), the arrays go to ``model.safetensors``, and the metrics and the tuning log travel
beside them. (No ``from __future__ import annotations`` here: the mixin reads the real annotation types.)
"""

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import CommitInfo, ModelCard, ModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from .card import STUDENT_TAGS, model_card
from .concepts.encoder import ConceptEncoder
from .concepts.presence import concept_presence, stored_regions
from .data import open_rgb
from .distill import DistillConfig
from .errors import ConfigError, LoadError
from .hub import check_ref, check_repo_id, hub_errors, loading
from .linear import Contribution, LinearStudent, softmax
from .storage import replace_folder

#: Files saved beside the weights, and the attribute each one fills on load.
EXTRA_FILES = {"metrics.json": "metrics", "tuning_log.json": "tuning_log"}
#: Every file a saved student folder holds.
STUDENT_FILES = frozenset({"model.safetensors", "config.json", "README.md", *EXTRA_FILES})
#: The arrays of model.safetensors (``weight_std`` only for a student fitted with an ensemble).
ARRAYS = ("weight", "bias", "score_mean", "score_std", "concept_embeddings")


def holds_student(folder: Path) -> bool:
    """True when ``folder`` holds a saved student and nothing else (so saving may replace it whole)."""
    names = {p.name for p in folder.iterdir()}
    if not names <= STUDENT_FILES | {"concepts.json"} or "config.json" not in names:  # concepts.json: older saves
        return False
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"concepts", "class_names", "encoder"} <= set(config)


@dataclass
class EncoderRef:
    """Which dual encoder a student's concepts were measured with, and how its regions were taken."""

    repo_id: str
    revision: str | None = None
    region_mode: str = "auto"
    grid_size: int = 2


@dataclass
class Predictions:
    """Predictions for N images: logits and probabilities (N, C), class ids (N,) and their names."""

    logits: np.ndarray
    probs: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]


@dataclass
class Explanation:
    """Why the student gave ``class_name`` to an image: its probability and top contributing concepts
    (each with the region it was found in; ``Contribution.box_on(image.size)`` gives its pixels)."""

    class_id: int
    class_name: str
    prob: float
    contributions: list[Contribution]


def _json_safe(name: str, value: object) -> object:
    """``value`` when it is strict JSON; the mixin would otherwise drop it from config.json without a word."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"The student's {name} must be plain JSON data ({error}).") from error
    return value


class ConceptStudent(ModelHubMixin, library_name="infincond", pipeline_tag="image-classification",
                     tags=list(STUDENT_TAGS)):
    """A sparse linear model over concept presence scores, with the concepts' embeddings and a reference to
    the encoder that measures them. Load with ``from_pretrained`` (strict: every array must be there)."""

    def __init__(self, concepts: list[str], class_names: list[str], encoder: EncoderRef,
                 distill: DistillConfig | None = None, provenance: dict | None = None) -> None:
        if not concepts or len(class_names) < 2:
            raise ConfigError("A student needs at least one concept and two classes.")
        self.concepts, self.class_names = list(concepts), list(class_names)
        self.encoder_ref = encoder if isinstance(encoder, EncoderRef) else EncoderRef(**encoder)
        self.provenance = dict(_json_safe("provenance", provenance or {}))
        k, c = len(self.concepts), len(self.class_names)
        self.linear = LinearStudent(np.zeros((c, k)), np.zeros(c), np.zeros(k, dtype=np.float32),
                                    np.ones(k, dtype=np.float32), distill or DistillConfig())
        #: Concept text embeddings (K, D), L2-normalised: what predicting compares image regions with.
        self.concept_embeddings: np.ndarray | None = None
        #: Metrics of the student (:meth:`Metrics.to_dict`), saved as ``metrics.json``.
        self.metrics: dict | None = None
        #: The full, replayable tuning log (``TuningSession.export_log``), saved as ``tuning_log.json``.
        self.tuning_log: dict | None = None
        self._encoder: ConceptEncoder | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: LinearStudent, features, encoder: ConceptEncoder | None = None,
                    provenance: dict | None = None, metrics: dict | None = None,
                    tuning_log: dict | None = None) -> "ConceptStudent":
        """Wrap a fitted :class:`LinearStudent` with the concepts and encoder reference of its FeatureSet;
        ``provenance`` adds entries (e.g. the tuning edits) to what the FeatureSet records; ``metrics`` and
        ``tuning_log`` travel with the student (files beside the weights, and the model card)."""
        prov = {**features.provenance, **(provenance or {})}
        ref = prov.get("encoder") or {"repo_id": getattr(encoder, "repo_id", "unknown")}
        student = cls(concepts=list(features.concepts), class_names=list(features.class_names),
                      encoder=EncoderRef(**{k: ref[k] for k in ("repo_id", "revision", "region_mode", "grid_size")
                                            if k in ref}),
                      distill=linear.config, provenance={k: v for k, v in prov.items() if k != "encoder"})
        student.linear = linear.copy(info={})
        student.concept_embeddings = np.asarray(features.concept_embeddings, dtype=np.float32).copy()
        student._encoder = encoder
        student.metrics = _json_safe("metrics", metrics) if metrics is not None else None
        student.tuning_log = _json_safe("tuning log", tuning_log) if tuning_log is not None else None
        return student

    @classmethod
    def from_session(cls, session, encoder: ConceptEncoder | None = None) -> "ConceptStudent":
        """The current student of a :class:`~infincond.tuning.TuningSession`, carrying its metrics and the
        whole log (its actions are also summarised in ``provenance["tuning"]``)."""
        history = [{"step": e.step, "action": e.action, "summary": e.summary, "time": e.time, "params": e.params}
                   for e in session.log[1:]]
        if session.eval_features is not None:
            source = session.eval_features.provenance.get("dataset", {})
            where = f"images of the evaluation set ({source.get('dataset', '?')}, split {source.get('split', '?')})"
        else:
            where = "held-out validation images of the sample"
        return cls.from_linear(session.student, session.features, encoder,
                               provenance={"tuning": history, "evaluated_on": where}, metrics=session.metrics,
                               tuning_log=session.export_log())

    @property
    def encoder_info(self) -> dict:
        """The encoder's reference as a dict (repo_id, revision, region_mode, grid_size)."""
        return asdict(self.encoder_ref)

    @property
    def distill_config(self) -> DistillConfig:
        return self.linear.config

    # -- the Hub: save, load, push ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> "ConceptStudent":
        """Load a student from a Hub repo id or a local folder (every array strictly checked); the encoder's
        vision tower is loaded on first prediction, by its recorded repo id and revision."""
        ref = check_ref("student", pretrained_model_name_or_path)
        with loading("student", ref), hub_errors("load the student", ref):
            # The mixin treats any failure to fetch config.json as "no config"; fetching it first surfaces
            # the real reason (missing or private repo, bad token, no network) as a clear error.
            if Path(ref).is_dir():
                if not (Path(ref) / "config.json").exists():
                    raise LoadError(f"{ref} holds no config.json: it is not a saved InFiConD student.")
            else:
                options = ("revision", "cache_dir", "token", "force_download", "local_files_only")
                hf_hub_download(ref, "config.json", **{k: kwargs[k] for k in options if k in kwargs})
            try:
                return super().from_pretrained(ref, **kwargs)
            except TypeError as error:  # config.json lacks an argument or has one of the wrong kind
                raise LoadError(f"Could not load the student {ref!r}: its config.json is not a student's ({error}). "
                                "Save or download the student again.") from error

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool,
                         local_files_only: bool, token, **model_kwargs) -> "ConceptStudent":
        student = cls(**model_kwargs)
        local = Path(model_id).is_dir()

        def fetch(name: str) -> Path | None:
            if local:
                return Path(model_id) / name if (Path(model_id) / name).is_file() else None
            try:
                return Path(hf_hub_download(model_id, name, revision=revision, cache_dir=cache_dir, token=token,
                                            force_download=force_download, local_files_only=local_files_only))
            except EntryNotFoundError:
                return None

        weights = fetch("model.safetensors")
        if weights is None:
            raise LoadError(f"{model_id} holds no model.safetensors: it is not a saved InFiConD student.")
        student._load_arrays(load_file(str(weights)), model_id)
        for name, attribute in EXTRA_FILES.items():  # optional: an older or hand-made student may lack them
            path = fetch(name)
            if path is not None:
                setattr(student, attribute, json.loads(path.read_text()))
        return student

    def _arrays(self) -> dict[str, np.ndarray]:
        linear = self.linear
        arrays = {"weight": linear.weight, "bias": linear.bias, "score_mean": linear.score_mean,
                  "score_std": linear.score_std, "concept_embeddings": self.concept_embeddings}
        if linear.weight_std is not None:
            arrays["weight_std"] = linear.weight_std
        return {name: np.ascontiguousarray(value) for name, value in arrays.items()}

    def _load_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        """Fill the student from ``model.safetensors``; strict: every array there, with the right shape."""
        k, c = len(self.concepts), len(self.class_names)
        shapes = {"weight": (c, k), "bias": (c,), "score_mean": (k,), "score_std": (k,), "weight_std": (c, k)}
        missing, unexpected = set(ARRAYS) - set(arrays), set(arrays) - set(ARRAYS) - {"weight_std"}
        wrong = [f"{n} {arrays[n].shape} (needs {s})" for n, s in shapes.items()
                 if n in arrays and arrays[n].shape != s]
        if missing or unexpected or wrong or arrays["concept_embeddings"].shape[0] != k:
            details = "; ".join(filter(None, [f"missing {sorted(missing)}" if missing else "",
                                              f"unexpected {sorted(unexpected)}" if unexpected else "", *wrong]))
            raise LoadError(f"Could not load the student {where!r}: its weights do not match its config.json "
                            f"({details or 'concept_embeddings has the wrong number of rows'}). Save or download "
                            "the student again.")
        self.linear.weight, self.linear.bias = arrays["weight"], arrays["bias"]
        self.linear.score_mean, self.linear.score_std = arrays["score_mean"], arrays["score_std"]
        self.linear.weight_std = arrays.get("weight_std")
        self.concept_embeddings = arrays["concept_embeddings"]

    def save_pretrained(self, save_directory: str | Path, *, config: dict | None = None, repo_id: str | None = None,
                        push_to_hub: bool = False, model_card_kwargs: dict | None = None, **push_to_hub_kwargs):
        """Save into ``save_directory``: a new or empty folder, or one holding a previous student, which is
        replaced whole and atomically (written beside, then renamed into place). A folder with other content
        is refused with a :class:`~infincond.errors.StorageError`, so nothing else is ever overwritten."""
        if push_to_hub:
            repo_id = check_repo_id(repo_id or Path(save_directory).name)
        replace_folder(save_directory, lambda stage: super(ConceptStudent, self).save_pretrained(
            stage, config=config, model_card_kwargs=model_card_kwargs), what="a student", replaceable=holds_student)
        if push_to_hub:
            return self.push_to_hub(repo_id, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        if self.concept_embeddings is None:
            raise ConfigError("This student has no concept embeddings yet: build it with ConceptStudent.from_linear.")
        save_file(self._arrays(), str(Path(save_directory) / "model.safetensors"))
        for name, attribute in EXTRA_FILES.items():
            value = getattr(self, attribute)
            if value is not None:
                (Path(save_directory) / name).write_text(json.dumps(value, indent=1, allow_nan=False))

    def generate_model_card(self, repo_id: str | None = None, **_) -> ModelCard:
        """The model card (``README.md``): see :func:`infincond.card.model_card`."""
        return model_card(self, repo_id)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Push an InFiConD student", branch: str | None = None,
                    **kwargs) -> CommitInfo:
        """Push the student in one commit: ``model.safetensors``, ``config.json``, ``metrics.json``,
        ``tuning_log.json`` and the ``README.md`` model card. The repo is created when missing (``private``
        applies then); files already there that the student does not write are kept.

        Returns the commit info (a URL string; ``.repo_url`` is the repo's). Hub failures raise
        :class:`~infincond.errors.HubError` with what to check.
        """
        repo_id = check_repo_id(repo_id)
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
            ref = self.encoder_ref
            revision = ref.revision
            if revision is not None and str(revision).startswith("local-"):
                revision = None  # a local folder's content stamp, not a git revision
            self._encoder = ConceptEncoder.from_pretrained(ref.repo_id, revision, region_mode=ref.region_mode,
                                                           grid_size=int(ref.grid_size), vision_only=True)
        return self._encoder

    @torch.inference_mode()
    def concept_scores(self, images: Sequence[Image.Image | str | os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
        """Presence scores (B, K) and arg-max regions (B, K) of the student's concepts in raw images."""
        regions = self.encoder.encode_regions([open_rgb(im, f"Image {i}") for i, im in enumerate(images)])
        scores, best = concept_presence(stored_regions(regions.embeddings), torch.from_numpy(self.concept_embeddings))
        return scores.cpu().numpy(), best.cpu().numpy()

    def predict(self, images: Sequence[Image.Image | str | os.PathLike] | Image.Image | str | os.PathLike,
                batch_size: int = 32) -> Predictions:
        """Class predictions for raw images (PIL images or image file paths)."""
        images = [images] if isinstance(images, (Image.Image, str, os.PathLike)) else list(images)
        logits = np.concatenate([
            self.linear.logits(self.concept_scores(images[i : i + batch_size])[0])
            for i in range(0, len(images), batch_size)
        ]) if images else np.zeros((0, len(self.class_names)), dtype=np.float32)
        ids = logits.argmax(1)
        return Predictions(logits, softmax(logits.astype(np.float64)), ids, [self.class_names[i] for i in ids])

    def explain(self, image: Image.Image | str | os.PathLike, top_k: int = 5,
                class_id: int | None = None) -> Explanation:
        """Top contributing concepts to one class (the predicted one by default), with their regions."""
        image = open_rgb(image)
        scores, best = self.concept_scores([image])
        logits = self.linear.logits(scores)[0]
        class_id = int(logits.argmax()) if class_id is None else int(class_id)
        regions = self.encoder.region_boxes[best[0]]
        contributions = self.linear.contributions(scores[0], class_id, self.concepts, regions, top_k)
        prob = float(softmax(logits[None].astype(np.float64))[0, class_id])
        return Explanation(class_id, self.class_names[class_id], prob, contributions)
