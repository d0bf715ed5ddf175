"""Teacher: any image classifier the transformers Auto classes load, giving batched logits and its
label space."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import LoadError
from .extract.preprocess import PlannedModel
from .extract.runtime import resolve_device
from .hub import check_ref, loading, model_revision

_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def resolve_class_names(id2label: dict | None, num_labels: int, dataset_label_names: Sequence[str] | None) -> list[str]:
    """The teacher's class names from ``id2label``; when it only has generic ``LABEL_i`` names and the
    dataset's ClassLabel has as many names, the dataset's names are used instead."""
    names = [str((id2label or {}).get(i, f"LABEL_{i}")) for i in range(num_labels)]
    generic = all(_GENERIC_LABEL.match(n) for n in names)
    if generic and dataset_label_names is not None and len(dataset_label_names) == num_labels:
        return [str(n) for n in dataset_label_names]
    return names


class Teacher(PlannedModel):
    """A loaded image classifier: ``logits(images)`` gives (N, C) float32 for RGB PIL images."""

    def __init__(self, model: torch.nn.Module, processor: object, repo_id: str, revision: str,
                 class_names: list[str], device: str | torch.device = "cpu") -> None:
        super().__init__(model, processor, repo_id, revision, device)
        self.class_names = class_names

    @classmethod
    def from_pretrained(cls, ref: str, revision: str | None = None, *,
                        dataset_label_names: Sequence[str] | None = None,
                        device: str | torch.device | None = None) -> Teacher:
        """Load ``AutoModelForImageClassification`` and ``AutoImageProcessor`` from a repo id or folder
        (timm-format repos too, when timm is installed)."""
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        ref = check_ref("teacher", ref)
        with loading("teacher", ref):
            model, info = AutoModelForImageClassification.from_pretrained(ref, revision=revision,
                                                                          output_loading_info=True)
            processor = AutoImageProcessor.from_pretrained(ref, revision=revision)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise LoadError(
                f"{ref!r} is not a trained image classifier: {len(missing)} of its classifier's weights "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) are not in the repo, so they "
                "would be random. Choose a model fine-tuned for image classification (its model card says "
                "'image-classification'); a CLIP-style encoder goes in the encoder field instead.")
        num_labels = int(model.config.num_labels)
        if num_labels < 2:
            raise LoadError(f"Teacher {ref!r} has {num_labels} output(s); "
                            "a classifier with at least 2 classes is needed.")
        names = resolve_class_names(getattr(model.config, "id2label", None), num_labels, dataset_label_names)
        return cls(model, processor, ref, model_revision(ref, revision, model.config), names, resolve_device(device))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @torch.inference_mode()
    def logits_from_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) float32, on the model's device, of pixel values (B, 3, H, W)."""
        return self.model(pixel_values=pixel_values).logits.float()

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Logits (B, C) float32 for a batch of RGB images."""
        return self.logits_from_pixels(self.pixel_values(images)).cpu().numpy()
