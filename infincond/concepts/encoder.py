"""ConceptEncoder: any CLIP-style dual encoder from the Hub, giving text embeddings and, for images,
one embedding per region (the whole image first) from a single forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, LoadError
from ..extract.preprocess import PlannedModel
from ..extract.runtime import resolve_device
from ..hub import check_ref, loading, model_revision
from ..regions import grid_boxes, image_views

RegionMode = Literal["auto", "dense", "grid", "whole"]
REGION_MODES: tuple[str, ...] = get_args(RegionMode)


@dataclass
class RegionEmbeddings:
    """Region embeddings of a batch of images.

    embeddings: (B, R, D) float32, L2-normalised; region 0 is the whole image.
    boxes: (R, 4) float32, (x0, y0, x1, y1) in [0, 1] on the encoder's square input crop.
    """

    embeddings: torch.Tensor
    boxes: np.ndarray


def _pooled(output: object) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ConceptEncoder(PlannedModel):
    """Wraps a CLIP-style dual encoder (CLIP, SigLIP, ...) loaded with the transformers Auto classes.

    Regions ("dense" mode) are the encoder's own patch tokens, projected into the joint space the way
    MaskCLIP does for CLIP (the last block's value path instead of its attention), through the
    attention-pooling head for SigLIP, and the last feature map's cells for convolutional towers that
    pool it into the image embedding (ALIGN), all inside the one forward pass that also gives the whole-image
    embedding. "grid" mode embeds a grid of crops (any dual encoder); "whole" keeps only the image.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: object,
        repo_id: str,
        revision: str,
        region_mode: str = "auto",
        grid_size: int = 2,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(model, processor, repo_id, revision, device)
        self.grid_size = grid_size
        self.family = self._detect_family()
        if region_mode not in REGION_MODES:
            raise ConfigError(f"region_mode must be one of {REGION_MODES}, not {region_mode!r}.")
        if region_mode == "auto":
            region_mode = "dense" if self.family != "other" else "grid"
        if region_mode == "dense" and self.family == "other":
            raise ConfigError(
                f"Dense patch regions are not supported for {type(model).__name__}; use region_mode='grid'."
            )
        self.region_mode = region_mode

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        ref: str,
        revision: str | None = None,
        *,
        region_mode: str = "auto",
        grid_size: int = 2,
        device: str | torch.device | None = None,
        vision_only: bool = False,
    ) -> ConceptEncoder:
        """Load a dual encoder and its processor from a Hub repo id or a local folder.

        ``vision_only`` drops the text tower after loading (a student that carries its concept
        embeddings never needs it).
        """
        from transformers import AutoModel, AutoProcessor

        ref = check_ref("concept encoder", ref)
        with loading("concept encoder", ref):
            model = AutoModel.from_pretrained(ref, revision=revision)
            processor = AutoProcessor.from_pretrained(ref, revision=revision)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise LoadError(
                f"{ref!r} is a {type(model).__name__}, not a dual image-text encoder: "
                "choose a CLIP-style model (CLIP, SigLIP, ...)."
            )
        if vision_only:
            for name in ("text_model", "text_projection"):
                if hasattr(model, name):
                    setattr(model, name, None)
        rev = model_revision(ref, revision, model.config)
        return cls(model, processor, ref, rev, region_mode=region_mode, grid_size=grid_size,
                   device=resolve_device(device))

    def _detect_family(self) -> str:
        vision = getattr(self.model, "vision_model", None)
        if vision is None:
            return "other"
        if hasattr(self.model, "visual_projection") and hasattr(vision, "post_layernorm"):
            layers = getattr(getattr(vision, "encoder", None), "layers", None)
            if layers and hasattr(layers[-1], "self_attn") and hasattr(layers[-1].self_attn, "v_proj"):
                return "clip"
        head = getattr(vision, "head", None)
        if head is not None and isinstance(getattr(head, "attention", None), torch.nn.MultiheadAttention):
            return "siglip"
        if isinstance(getattr(vision, "pooler", None), (torch.nn.AvgPool2d, torch.nn.MaxPool2d)):
            return "align"  # a convolutional tower whose image embedding pools its last feature map
        return "other"

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint embedding space."""
        cfg = self.model.config
        return int(getattr(cfg, "projection_dim", None) or cfg.vision_config.hidden_size)

    # -- text ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Text embeddings (K, D), L2-normalised, float32 on the CPU."""
        if getattr(self.model, "text_model", None) is None:
            raise ConfigError("This encoder was loaded vision-only; load it with vision_only=False to embed text.")
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        padding = "max_length" if self.family == "siglip" else True
        self._check_lengths(tokenizer, texts)
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start : start + batch_size]), padding=padding, truncation=True,
                              return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out.append(F.normalize(_pooled(self.model.get_text_features(**batch)).float(), dim=-1).cpu())
        return torch.cat(out)

    def _check_lengths(self, tokenizer, texts: Sequence[str]) -> None:
        """Refuse a prompt longer than the text tower reads (its position embeddings), naming it and the limit:
        a runaway line of a concept file, say, rather than an error deep inside the model."""
        config = self.model.config.text_config if hasattr(self.model.config, "text_config") else self.model.config
        limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
        limit = min(int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000) if any(
            isinstance(v, int) and 0 < v < 1_000_000 for v in limits) else None
        if limit is None:
            return
        for i, text in enumerate(texts):
            if len(text) + 2 > limit:  # a token spans a character at least (and the prompt adds two): only
                length = len(tokenizer(text, truncation=False)["input_ids"])  # texts this long can be too long
                if length > limit:
                    shown = text if len(text) <= 60 else text[:57] + "..."
                    raise ConfigError(f"Concept {i + 1} of the corpus, {shown!r} ({len(text):,} characters), is "
                                      f"{length:,} tokens as a prompt; the encoder reads at most {limit}. Shorten "
                                      "that line, or split it into several concepts.")

    # -- images -------------------------------------------------------------------------------
    @property
    def view_grid(self) -> int:
        """The side of the grid of crops each image is also seen as: ``grid_size`` in "grid" mode, else 0."""
        return self.grid_size if self.region_mode == "grid" else 0

    @property
    def views_per_image(self) -> int:
        """Inputs per image the regions come from: the image, plus the grid crops in "grid" mode."""
        return 1 + self.view_grid**2

    def views(self, image: Image.Image) -> list[Image.Image]:
        """The inputs of one image (see :func:`~infincond.regions.image_views`)."""
        return image_views(image, self.view_grid)

    @property
    def region_boxes(self) -> np.ndarray:
        """Boxes (R, 4) of the regions this encoder produces, the whole image first."""
        whole = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
        if self.region_mode == "whole":
            return whole
        if self.region_mode == "grid":
            return np.concatenate([whole, grid_boxes(self.grid_size, self.grid_size)])
        side = self._patch_grid_side()
        return np.concatenate([whole, grid_boxes(side, side)])

    def _patch_grid_side(self) -> int:
        cfg = self.model.config.vision_config if hasattr(self.model.config, "vision_config") else self.model.config
        if self.family == "align":
            if not hasattr(self, "_feature_side"):
                self._feature_side = align_feature_side(self.model, int(cfg.image_size))
            return self._feature_side
        return int(cfg.image_size) // int(cfg.patch_size)

    @torch.inference_mode()
    def embeddings_from_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Whole-image embeddings (B, D), L2-normalised, of pixel values (B, 3, H, W)."""
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=pixel_values)).float(), dim=-1)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Whole-image embeddings (B, D), L2-normalised (the baseline without regions)."""
        return self.embeddings_from_pixels(self.pixel_values(images))

    @torch.inference_mode()
    def regions_from_pixels(self, pixel_values: torch.Tensor) -> RegionEmbeddings:
        """Region embeddings from pixel values (B * V, 3, H, W) of the views of B images
        (V = :attr:`views_per_image`, each image's views consecutive): whole image first, then the
        patches or grid crops. The one forward path of every image method."""
        if self.region_mode == "whole":
            embeddings = self.embeddings_from_pixels(pixel_values)[:, None]
        elif self.region_mode == "grid":
            flat = self.embeddings_from_pixels(pixel_values)
            embeddings = flat.reshape(-1, self.views_per_image, flat.shape[-1])
        elif self.family == "clip":
            embeddings = clip_region_embeddings(self.model, pixel_values)
        elif self.family == "align":
            embeddings = align_region_embeddings(self.model, pixel_values)
        else:
            embeddings = self._siglip_dense(pixel_values)
        return RegionEmbeddings(embeddings.float(), self.region_boxes)

    @torch.inference_mode()
    def encode_regions(self, images: Sequence[Image.Image]) -> RegionEmbeddings:
        """Region embeddings of RGB images: whole image first, then patches or grid crops."""
        return self.regions_from_pixels(self.pixel_values([view for image in images for view in self.views(image)]))

    def _siglip_dense(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vision = self.model.vision_model
        out = vision(pixel_values=pixel_values)
        tokens = out.last_hidden_state  # already post-layernormed, as the head sees them
        head = vision.head
        dim = tokens.shape[-1]
        attn = head.attention
        # Attention pooling over a single token reduces to its value path and the output projection.
        value = F.linear(tokens, attn.in_proj_weight[2 * dim :], attn.in_proj_bias[2 * dim :])
        x = attn.out_proj(value)
        x = x + head.mlp(head.layernorm(x))
        return F.normalize(torch.cat([out.pooler_output[:, None], x], 1).float(), dim=-1)


def clip_region_embeddings(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Whole-image and patch embeddings (B, 1 + P, D), L2-normalised, of a CLIPModel in one forward pass.

    Patches follow MaskCLIP: the last block's value path (no query-key mixing), keeping its residual and
    MLP. Differentiable, so the demo world's encoder is trained on exactly what is measured here.
    """
    vision = model.vision_model
    last = vision.encoder.layers[-1]
    captured: dict[str, torch.Tensor] = {}

    def grab(_module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]

    handle = last.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        pooled = _pooled(model.get_image_features(pixel_values=pixel_values))
    finally:
        handle.remove()
    x = captured["x"][:, 1:]  # patch tokens entering the last block
    x = x + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
    x = x + last.mlp(last.layer_norm2(x))
    patches = model.visual_projection(vision.post_layernorm(x))
    return F.normalize(torch.cat([pooled[:, None], patches], 1).float(), dim=-1)


def align_feature_side(model: torch.nn.Module, image_size: int) -> int:
    """Side of the last feature map of an ALIGN-style tower for ``image_size`` inputs (it depends on the
    strides and padding, so it is read off one forward pass of a blank image)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            probe = torch.zeros(1, 3, image_size, image_size, device=device)
            return int(model.vision_model(pixel_values=probe).last_hidden_state.shape[-1])
    finally:
        model.train(was_training)


def align_region_embeddings(model: torch.nn.Module, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Whole-image and cell embeddings (B, 1 + h * w, D), L2-normalised unless ``normalize=False``, of a
    dual encoder whose image embedding pools its last feature map (ALIGN): each cell of the map is a
    region, row-major, and the image embedding is their mean (or max). Differentiable."""
    out = model.vision_model(pixel_values=pixel_values)
    cells = out.last_hidden_state.flatten(2).transpose(1, 2)  # (B, h * w, D)
    pooled = out.pooler_output.reshape(cells.shape[0], -1)
    regions = torch.cat([pooled[:, None], cells], 1).float()
    return F.normalize(regions, dim=-1) if normalize else regions
