"""The Shapes world's dual encoder: a small ALIGN model (a convolutional image tower, a BERT text tower)
trained from scratch in two stages, on what the product measures.

A convolutional tower, because on a 2-core CPU it learns shape in about a hundred steps where a ViT of
the same cost needs more than a thousand. Its image embedding is the mean of its last feature map, so
each cell of that map is a region embedding in the same space (:func:`align_region_embeddings`).

1. Image tower, supervised: the image embedding against one learned direction per attribute value
   (cosine with the direction, so the arg-max is the zero-shot prediction), and each attribute's
   direction, in a softmax over the image's cells, on the cells it belongs to (the object's cells for
   shape, colour and pattern, the others for the background).
2. Text tower, with the image tower locked (LiT, Zhai et al. 2022): contrast against the images'
   embeddings on generated captions that name random subsets of the attributes (every caption true of
   an image counts as a match, so there are no false negatives), "a photo of {value}." prompts for
   each family, the same cell-level localisation, and a pull of each prompt towards its direction.
"""
from __future__ import annotations

import os
import string
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..concepts.corpus import DEFAULT_TEMPLATE
from ..concepts.encoder import align_feature_side, align_region_embeddings
from .biased_teacher import cosine_schedule, images_to_uint8, pixel_affine
from .scenes import VOCABULARY, SceneConfig, caption, random_scenes, render_many

TEMPLATE = DEFAULT_TEMPLATE  # trained on exactly the prompts the product extracts with
_FAMILIES = ("shape", "colour", "pattern", "size", "background")
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class EncoderTrainConfig:
    """Architecture and schedule of the world's dual encoder."""

    width: float = 0.5
    text_hidden: int = 128
    text_layers: int = 2
    heads: int = 4
    pool_size: int = 12000
    expand_ratio: int = 3
    image_steps: int = 500
    batch_size: int = 128
    learning_rate: float = 3e-3
    text_steps: int = 400
    text_batch_size: int = 256
    text_learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 20
    region_weight: float = 1.0
    cell_scale: float = 10.0
    hard_family_weight: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer():
    """A WordPiece tokenizer: the world's words whole, any other word spelled out in characters, so that
    every concept of a corpus still gets its own text embedding."""
    from transformers import BertTokenizer

    words = [w for values in VOCABULARY.values() for w in values]
    words += ["a", "photo", "of", "on", "with", "shape", "rocks"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = _SPECIAL + sorted(set(words)) + chars + ["##" + c for c in string.ascii_lowercase + string.digits]
    return BertTokenizer(vocab={token: i for i, token in enumerate(dict.fromkeys(vocab))}, model_max_length=32)


def build_dual_encoder(image_size: int, config: EncoderTrainConfig, seed: int):
    """A randomly initialised AlignModel and its AlignProcessor for ``image_size`` images."""
    from transformers import (
        AlignConfig,
        AlignModel,
        AlignProcessor,
        AlignVisionConfig,
        EfficientNetImageProcessor,
    )
    from transformers.models.align.modeling_align import round_filters

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    # Strides put the last feature map at 1/8 of the image (8 x 8 cells for 64 pixels).
    vision = {"image_size": image_size, "width_coefficient": config.width, "depth_coefficient": 1.0,
              "num_block_repeats": [1] * 7,
              "expand_ratios": [1] + [config.expand_ratio] * 6, "strides": [1, 2, 2, 1, 1, 1, 1], "drop_connect_rate": 0.0,
              "batch_norm_momentum": 0.1}
    embed_dim = int(round_filters(AlignVisionConfig(**vision), AlignVisionConfig().out_channels[-1]))
    h = config.text_hidden
    text = {"vocab_size": len(tokenizer), "hidden_size": h, "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.heads, "intermediate_size": 4 * h, "max_position_embeddings": 32,
            "pad_token_id": tokenizer.pad_token_id}
    model = AlignModel(AlignConfig(text_config=text, vision_config=vision, projection_dim=embed_dim,
                                   temperature_init_value=0.07))
    image_processor = EfficientNetImageProcessor(size={"height": image_size, "width": image_size},
                                                 do_center_crop=False)
    return model, AlignProcessor(image_processor=image_processor, tokenizer=tokenizer)


def patch_coverage(masks: np.ndarray, patch_size: int) -> np.ndarray:
    """Share of each patch covered by the object: (N, H, W) masks -> (N, P) float32, row-major."""
    n, h, w = masks.shape
    blocks = masks.reshape(n, h // patch_size, patch_size, w // patch_size, patch_size)
    return blocks.mean(axis=(2, 4)).reshape(n, -1).astype(np.float32)


def _attribute_ids(scenes) -> dict[str, torch.Tensor]:
    return {f: torch.tensor([VOCABULARY[f].index(s.attributes()[f]) for s, _ in scenes]) for f in _FAMILIES}


_CAPTION_FAMILIES = (*_FAMILIES, "distractor")


def _caption_matches(named: Sequence[dict[str, str]], truth_codes: torch.Tensor) -> torch.Tensor:
    """(B_images, B_captions) 1.0 where every attribute a caption names is true of the image.

    truth_codes (B_images, F) holds each image's value index per family of ``_CAPTION_FAMILIES``
    (distractor: 1 when rocks are present)."""
    codes = torch.full((len(named), len(_CAPTION_FAMILIES)), -1, dtype=torch.long)
    for j, attributes in enumerate(named):
        for f, family in enumerate(_CAPTION_FAMILIES):
            if family in attributes:
                codes[j, f] = 1 if family == "distractor" else VOCABULARY[family].index(attributes[family])
    agree = (codes[None] == -1) | (codes[None] == truth_codes[:, None])
    return agree.all(-1).float()


def _family_slices() -> dict[str, slice]:
    offsets = np.cumsum([0] + [len(VOCABULARY[f]) for f in _FAMILIES])
    return {f: slice(int(offsets[i]), int(offsets[i + 1])) for i, f in enumerate(_FAMILIES)}


_PLACES = (("shape", "object"), ("colour", "object"), ("pattern", "object"), ("background", "rest"))


def _localisation_loss(cells: torch.Tensor, directions: torch.Tensor, attributes: dict[str, torch.Tensor],
                       coverage: torch.Tensor, scale: float) -> torch.Tensor:
    """-log of the softmax mass over cells that each true attribute's direction puts where it belongs.

    cells (B, P, D) and directions (T, D) L2-normalised; coverage (B, P) object share of each cell."""
    slices = _family_slices()
    logits = scale * cells @ directions.T  # (B, P, T)
    masks = {"object": coverage >= 0.5, "rest": coverage == 0}
    total = cells.new_zeros(())
    for family, place in _PLACES:
        column = (slices[family].start + attributes[family]).view(-1, 1, 1).expand(-1, logits.shape[1], 1)
        per_cell = logits.gather(2, column).squeeze(2)  # (B, P)
        where = masks[place]
        has = where.any(1)
        inside = torch.logsumexp(per_cell.masked_fill(~where, -1e4), 1)
        total = total + (torch.logsumexp(per_cell, 1) - inside)[has].mean()
    return total / len(_PLACES)


def _flip_cells(coverage: torch.Tensor, side: int) -> torch.Tensor:
    return coverage.view(-1, side, side).flip(-1).reshape(coverage.shape)


def train_dual_encoder(folder: str | os.PathLike, scene_config: SceneConfig, config: EncoderTrainConfig,
                       seed: int, progress: bool = True) -> dict:
    """Train the world's dual encoder on a pool of uniformly drawn scenes (every attribute independent)
    and save it with its processor into ``folder``. Returns a training summary."""
    start = time.perf_counter()
    model, processor = build_dual_encoder(scene_config.image_size, config, seed)
    scenes = random_scenes(config.pool_size, scene_config, seed, stream=100)
    images, masks = render_many(tqdm(scenes, desc="Encoder scenes", disable=not progress, leave=False),
                                scene_config.image_size)
    pixels = images_to_uint8(images)
    del images
    scale_px, offset_px = pixel_affine(processor.image_processor)
    side = align_feature_side(model, scene_config.image_size)
    coverage = torch.from_numpy(patch_coverage(masks, scene_config.image_size // side))
    del masks
    attributes = _attribute_ids(scenes)
    truth_codes = torch.stack([attributes[f] for f in _CAPTION_FAMILIES[:-1]]
                              + [torch.tensor([int(s.rocks > 0) for s, _ in scenes])], 1)
    n_directions = sum(len(VOCABULARY[f]) for f in _FAMILIES)
    slices = _family_slices()
    rng = np.random.default_rng([seed, 8])

    # Stage 1: the image tower against one learned direction per attribute value.
    directions = torch.nn.Parameter(torch.randn(n_directions, model.config.projection_dim) * 0.1)
    optimizer = torch.optim.AdamW([{"params": model.vision_model.parameters()},
                                   {"params": [directions], "lr": 10 * config.learning_rate}],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = cosine_schedule(optimizer, config.image_steps, config.warmup)
    model.train()
    image_losses = []
    bar = tqdm(range(config.image_steps), desc="Image tower", disable=not progress)
    for _ in bar:
        idx = torch.from_numpy(rng.choice(len(scenes), config.batch_size, replace=False))
        batch = pixels[idx].float() / 255.0 * scale_px + offset_px
        cov = coverage[idx]
        if rng.random() < 0.5:  # every shape of the world is mirror-symmetric
            batch, cov = batch.flip(-1), _flip_cells(cov, side)
        regions = align_region_embeddings(model, batch, normalize=False)
        unit = F.normalize(directions, dim=-1)
        # Unnormalised image embedding against unit directions: the same arg-max as the cosine.
        logits = regions[:, 0] @ unit.T
        truth = {f: v[idx] for f, v in attributes.items()}
        # Shape and pattern are the slow families for a small network (and shape is the teacher's classes).
        weights = {f: config.hard_family_weight if f in ("shape", "pattern") else 1.0 for f in _FAMILIES}
        loss_global = sum(weights[f] * F.cross_entropy(logits[:, slices[f]], truth[f])
                          for f in _FAMILIES) / sum(weights.values())
        loss_cells = _localisation_loss(F.normalize(regions[:, 1:], dim=-1), unit, truth, cov, config.cell_scale)
        loss = loss_global + config.region_weight * loss_cells
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        image_losses.append((loss_global.item(), loss_cells.item()))
        bar.set_postfix(attributes=f"{image_losses[-1][0]:.3f}", regions=f"{image_losses[-1][1]:.3f}")

    # Stage 2: the text tower against the locked image tower's embeddings.
    model.eval()
    for parameter in model.vision_model.parameters():
        parameter.requires_grad_(False)
    with torch.inference_mode():
        embedded = [align_region_embeddings(model, pixels[i: i + 256].float() / 255.0 * scale_px + offset_px)
                    for i in tqdm(range(0, len(scenes), 256), desc="Embedding pool", disable=not progress, leave=False)]
    image_emb = torch.cat([e[:, 0] for e in embedded]).clone()
    cell_emb = torch.cat([e[:, 1:] for e in embedded]).half()
    del embedded
    unit = F.normalize(directions.detach(), dim=-1)
    tokenizer = processor.tokenizer
    prompts = [TEMPLATE.format(v) for f in _FAMILIES for v in VOCABULARY[f]]
    prompt_tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    text_params = [*model.text_model.parameters(), *model.text_projection.parameters()]
    optimizer = torch.optim.AdamW([{"params": text_params}, {"params": [model.temperature], "weight_decay": 0.0}],
                                  lr=config.text_learning_rate, weight_decay=config.weight_decay)
    schedule = cosine_schedule(optimizer, config.text_steps, config.warmup)
    caption_rng = np.random.default_rng([seed, 7])
    model.text_model.train()
    text_losses = []
    bar = tqdm(range(config.text_steps), desc="Text tower", disable=not progress)
    for _ in bar:
        idx = torch.from_numpy(rng.choice(len(scenes), config.text_batch_size, replace=False))
        batch_scenes = [scenes[i][0] for i in idx.tolist()]
        texts, named = zip(*(caption(s, caption_rng) for s in batch_scenes), strict=True)
        match = _caption_matches(named, truth_codes[idx])
        captions = F.normalize(model.get_text_features(**tokenizer(list(texts), padding=True, return_tensors="pt"))
                               .pooler_output, dim=-1)
        prompt_emb = F.normalize(model.get_text_features(**prompt_tokens).pooler_output, dim=-1)
        scale = (1.0 / model.temperature).clamp(max=100.0)
        logits = scale * image_emb[idx] @ captions.T
        loss_caption = 0.5 * (-(F.log_softmax(logits, 1) * match / match.sum(1, keepdim=True)).sum(1).mean()
                              - (F.log_softmax(logits, 0) * match / match.sum(0, keepdim=True)).sum(0).mean())
        prompt_logits = scale * image_emb[idx] @ prompt_emb.T
        truth = {f: v[idx] for f, v in attributes.items()}
        loss_prompt = sum(F.cross_entropy(prompt_logits[:, slices[f]], truth[f]) for f in _FAMILIES) / len(_FAMILIES)
        loss_cells = _localisation_loss(cell_emb[idx].float(), prompt_emb, truth, coverage[idx], config.cell_scale)
        loss_pull = (1.0 - (prompt_emb * unit).sum(-1)).mean()
        loss = loss_caption + loss_prompt + config.region_weight * loss_cells + loss_pull
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        text_losses.append((loss_caption.item(), loss_prompt.item(), loss_cells.item(), loss_pull.item()))
        bar.set_postfix(captions=f"{text_losses[-1][0]:.2f}", prompts=f"{text_losses[-1][1]:.2f}")

    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    image_last, text_last = np.mean(image_losses[-20:], axis=0), np.mean(text_losses[-20:], axis=0)
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "image_tower": {"attributes": float(image_last[0]), "regions": float(image_last[1])},
        "text_tower": {"captions": float(text_last[0]), "prompts": float(text_last[1]), "regions": float(text_last[2]),
                       "pull": float(text_last[3])},
    }
