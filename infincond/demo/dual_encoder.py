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

(About 470 lines, over the project's 350: the model and its two training stages are one recipe that
shares the pool, the losses and the shard helpers; split, each part would reach into the other's.)
"""
from __future__ import annotations

import copy
import os
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..concepts.corpus import DEFAULT_TEMPLATE
from ..concepts.encoder import align_feature_side, align_region_embeddings
from .biased_teacher import cosine_schedule, images_to_uint8, model_input, pixel_affine
from .parallel import Shards, intra_op_threads, save_pretrained, seeded, split_evenly, sum_gradients
from .scenes import VOCABULARY, SceneConfig, caption, random_scenes, render_many

TEMPLATE = DEFAULT_TEMPLATE  # trained on exactly the prompts the product extracts with
_FAMILIES = ("shape", "colour", "pattern", "size", "background")
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class EncoderTrainConfig:
    """Architecture and schedule of the world's dual encoder.

    ``shards``: each step's batch is split into this many shards computed side by side (one per core of a
    2-core machine); batch norm sees each shard's images. ``text_dropout``: dropout of the text tower
    (0, so that the shards' forward passes draw nothing from torch's global random generator and a
    step's outcome never depends on which thread ran first)."""

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
    text_dropout: float = 0.0
    shards: int = 2

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

    tokenizer = build_tokenizer()
    # Strides put the last feature map at 1/8 of the image (8 x 8 cells for 64 pixels).
    vision = {
        "image_size": image_size,
        "width_coefficient": config.width,
        "depth_coefficient": 1.0,
        "num_block_repeats": [1] * 7,
        "expand_ratios": [1] + [config.expand_ratio] * 6,
        "strides": [1, 2, 2, 1, 1, 1, 1],
        "drop_connect_rate": 0.0,
        "batch_norm_momentum": 0.1,
    }
    embed_dim = int(round_filters(AlignVisionConfig(**vision), AlignVisionConfig().out_channels[-1]))
    h = config.text_hidden
    text = {"vocab_size": len(tokenizer), "hidden_size": h, "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.heads, "intermediate_size": 4 * h, "max_position_embeddings": 32,
            "pad_token_id": tokenizer.pad_token_id, "hidden_dropout_prob": config.text_dropout,
            "attention_probs_dropout_prob": config.text_dropout}
    with seeded(seed):  # the initial weights come from torch's global generator
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


class _Tower:
    """What :func:`align_region_embeddings` needs of a model: its image tower."""

    def __init__(self, vision_model: torch.nn.Module):
        self.vision_model = vision_model


def _replicas(module: torch.nn.Module, n: int) -> list[torch.nn.Module]:
    """``module`` and n - 1 copies sharing its parameters, each with its own buffers (batch norm's
    running statistics), so shards can run it side by side in training mode."""
    memo = {id(p): p for p in module.parameters()}
    return [module, *(copy.deepcopy(module, memo) for _ in range(n - 1))]


def _merge_buffers(replicas: Sequence[torch.nn.Module]) -> None:
    """Average the replicas' floating-point buffers into the first one. Batch norm's running mean is an
    exponential average of batch means, so the average over shards is the running mean of the whole
    batches; the running variance becomes the shards' average within-shard variance."""
    if len(replicas) < 2:
        return
    others = [dict(r.named_buffers()) for r in replicas[1:]]
    with torch.no_grad():
        for name, buffer in replicas[0].named_buffers():
            if buffer.is_floating_point():
                total = buffer.clone()
                for other in others:
                    total += other[name]
                buffer.copy_(total / len(replicas))


def train_dual_encoder(folder: str | os.PathLike, scene_config: SceneConfig, config: EncoderTrainConfig,
                       seed: int, progress: bool = True, *,
                       report: Callable[[str, int, int], None] | None = None) -> dict:
    """Train the world's dual encoder on a pool of uniformly drawn scenes (every attribute independent)
    and save it with its processor into ``folder``. Returns a training summary.

    ``report(stage, done, total)`` is called as the work advances, stage by stage (:data:`STAGES`).
    Each step's batch is computed as ``config.shards`` shards side by side, each with the calling
    thread's intra-op threads divided among the shards."""
    with intra_op_threads(max(1, torch.get_num_threads() // config.shards)), Shards(config.shards) as shards:
        return _train_dual_encoder(folder, scene_config, config, seed, progress,
                                   report or (lambda stage, done, total: None), shards)


#: The stages of :func:`train_dual_encoder`, as ``report`` names them.
STAGES = ("encoder scenes", "image tower", "pool embeddings", "text tower")


@dataclass
class _Pool:
    """The scenes the encoder trains on, rendered once: pixels (N, 3, S, S) uint8, each cell's coverage by
    the object (N, side * side), attribute ids per family (N,), caption truth codes (N, 5)."""

    scenes: list
    pixels: torch.Tensor
    coverage: torch.Tensor
    side: int
    attributes: dict[str, torch.Tensor]
    truth_codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor

    def model_input(self, uint8: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> the model's pixel values, channels-last (convolutions' fastest CPU layout)."""
        return model_input(uint8, self.scale, self.offset)


def _render_pool(model, processor, scene_config: SceneConfig, config: EncoderTrainConfig, seed: int,
                 progress: bool, report) -> _Pool:
    report(STAGES[0], 0, config.pool_size)
    scenes = random_scenes(config.pool_size, scene_config, seed, stream=100)
    images, masks = [], []
    chunk = 256
    for i in tqdm(range(0, len(scenes), chunk), desc="Encoder scenes", disable=not progress, leave=False):
        part_images, part_masks = render_many(scenes[i: i + chunk], scene_config.image_size)
        images += part_images
        masks.append(part_masks)
        report(STAGES[0], min(i + chunk, len(scenes)), len(scenes))
    pixels = images_to_uint8(images)
    del images
    scale, offset = pixel_affine(processor.image_processor)
    side = align_feature_side(model, scene_config.image_size)
    coverage = torch.from_numpy(patch_coverage(np.concatenate(masks), scene_config.image_size // side))
    attributes = _attribute_ids(scenes)
    truth_codes = torch.stack([attributes[f] for f in _CAPTION_FAMILIES[:-1]]
                              + [torch.tensor([int(s.rocks > 0) for s, _ in scenes])], 1)
    return _Pool(scenes, pixels, coverage, side, attributes, truth_codes, scale, offset)


def _train_image_tower(model, directions: torch.nn.Parameter, pool: _Pool, config: EncoderTrainConfig,
                       shards: Shards, rng: np.random.Generator, progress: bool, report) -> list[tuple[float, float]]:
    """Stage 1: the image tower against one learned direction per attribute value; each shard has its
    own batch norm statistics, merged at the end. Returns each step's (attribute, region) losses."""
    model.vision_model.to(memory_format=torch.channels_last)
    towers = _replicas(model.vision_model, shards.n)
    vision_params = [*model.vision_model.parameters(), directions]
    optimizer = torch.optim.AdamW([{"params": vision_params[:-1]},
                                   {"params": [directions], "lr": 10 * config.learning_rate}],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = cosine_schedule(optimizer, config.image_steps, config.warmup)
    for tower in towers:
        tower.train()
    # Shape and pattern are the slow families for a small network (and shape is the teacher's classes).
    weights = {f: config.hard_family_weight if f in ("shape", "pattern") else 1.0 for f in _FAMILIES}
    slices = _family_slices()
    losses = []

    def image_shard(k: int, idx: torch.Tensor, flip: bool) -> tuple[list, float, float]:
        sub = idx[split_evenly(len(idx), shards.n)[k]]
        batch, cov = pool.model_input(pool.pixels[sub]), pool.coverage[sub]
        if flip:  # every shape of the world is mirror-symmetric
            batch, cov = batch.flip(-1), _flip_cells(cov, pool.side)
        regions = align_region_embeddings(_Tower(towers[k]), batch, normalize=False)
        unit = F.normalize(directions, dim=-1)
        # Unnormalised image embedding against unit directions: the same arg-max as the cosine.
        logits = regions[:, 0] @ unit.T
        truth = {f: v[sub] for f, v in pool.attributes.items()}
        loss_global = sum(weights[f] * F.cross_entropy(logits[:, slices[f]], truth[f])
                          for f in _FAMILIES) / sum(weights.values())
        loss_cells = _localisation_loss(F.normalize(regions[:, 1:], dim=-1), unit, truth, cov, config.cell_scale)
        share = len(sub) / len(idx)  # the batch's loss is the shards' losses weighted by their size
        grads = torch.autograd.grad(share * (loss_global + config.region_weight * loss_cells), vision_params,
                                    allow_unused=True)
        return list(grads), share * loss_global.item(), share * loss_cells.item()

    report(STAGES[1], 0, config.image_steps)
    bar = tqdm(range(config.image_steps), desc="Image tower", disable=not progress)
    for step in bar:
        idx = torch.from_numpy(rng.choice(len(pool.scenes), config.batch_size, replace=False))
        flip = bool(rng.random() < 0.5)
        results = shards.map(lambda k: image_shard(k, idx, flip))  # noqa: B023 (called within the step)
        sum_gradients([r[0] for r in results], vision_params)
        optimizer.step()
        schedule.step()
        losses.append((sum(r[1] for r in results), sum(r[2] for r in results)))
        bar.set_postfix(attributes=f"{losses[-1][0]:.3f}", regions=f"{losses[-1][1]:.3f}")
        report(STAGES[1], step + 1, config.image_steps)
    optimizer.zero_grad(set_to_none=True)
    _merge_buffers(towers)
    return losses


def _embed_pool(model, pool: _Pool, shards: Shards, report) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2a: the locked image tower's embeddings of the pool: whole images (N, D) and cells
    (N, side * side, D) in half precision."""
    model.eval()
    for parameter in model.vision_model.parameters():
        parameter.requires_grad_(False)
    n = len(pool.scenes)
    starts = list(range(0, n, 256))
    report(STAGES[2], 0, n)

    def embed_shard(k: int) -> list[torch.Tensor]:
        out = []
        with torch.inference_mode():
            for j, i in enumerate(starts[split_evenly(len(starts), shards.n)[k]]):
                out.append(align_region_embeddings(model, pool.model_input(pool.pixels[i: i + 256])))
                if k == 0:
                    report(STAGES[2], min(n, (j + 1) * shards.n * 256), n)
        return out

    embedded = [e for part in shards.map(embed_shard) for e in part]
    report(STAGES[2], n, n)
    image_emb = torch.cat([e[:, 0] for e in embedded]).clone()
    cell_emb = torch.cat([e[:, 1:] for e in embedded]).half()
    model.vision_model.to(memory_format=torch.contiguous_format)
    return image_emb, cell_emb


def _text_loss(model, leaves: list, image_emb: torch.Tensor, cell_emb: torch.Tensor, unit: torch.Tensor,
               pool: _Pool, idx: torch.Tensor, match: torch.Tensor,
               config: EncoderTrainConfig) -> tuple[torch.Tensor, tuple[float, ...]]:
    """The text tower's loss on a batch, joining the shards' caption embeddings (``leaves[k][0]``; shard 0
    also holds the prompts' as ``leaves[0][1]``) against the batch's image (B, D) and cell (B, R, D)
    embeddings: captions, prompts, cell localisation and the pull towards the directions."""
    slices = _family_slices()
    captions = F.normalize(torch.cat([leaf[0] for leaf in leaves]), dim=-1)
    prompt_emb = F.normalize(leaves[0][1], dim=-1)
    scale = (1.0 / model.temperature).clamp(max=100.0)
    logits = scale * image_emb @ captions.T
    loss_caption = 0.5 * (-(F.log_softmax(logits, 1) * match / match.sum(1, keepdim=True)).sum(1).mean()
                          - (F.log_softmax(logits, 0) * match / match.sum(0, keepdim=True)).sum(0).mean())
    prompt_logits = scale * image_emb @ prompt_emb.T
    truth = {f: v[idx] for f, v in pool.attributes.items()}
    loss_prompt = sum(F.cross_entropy(prompt_logits[:, slices[f]], truth[f]) for f in _FAMILIES) / len(_FAMILIES)
    loss_cells = _localisation_loss(cell_emb.float(), prompt_emb, truth, pool.coverage[idx], config.cell_scale)
    loss_pull = (1.0 - (prompt_emb * unit).sum(-1)).mean()
    loss = loss_caption + loss_prompt + config.region_weight * loss_cells + loss_pull
    return loss, (loss_caption.item(), loss_prompt.item(), loss_cells.item(), loss_pull.item())


def _train_text_tower(model, tokenizer, directions: torch.Tensor, pool: _Pool, image_emb: torch.Tensor,
                      cell_emb: torch.Tensor, config: EncoderTrainConfig, shards: Shards, rng: np.random.Generator,
                      seed: int, progress: bool, report) -> list[tuple[float, ...]]:
    """Stage 2b: the text tower against the locked image tower's embeddings. Returns each step's
    (caption, prompt, region, pull) losses."""
    unit = F.normalize(directions.detach(), dim=-1)
    prompts = [TEMPLATE.format(v) for f in _FAMILIES for v in VOCABULARY[f]]
    prompt_tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    text_params = [*model.text_model.parameters(), *model.text_projection.parameters()]
    optimizer = torch.optim.AdamW([{"params": text_params}, {"params": [model.temperature], "weight_decay": 0.0}],
                                  lr=config.text_learning_rate, weight_decay=config.weight_decay)
    schedule = cosine_schedule(optimizer, config.text_steps, config.warmup)
    caption_rng = np.random.default_rng([seed, 7])
    model.text_model.train()
    losses = []

    def text_forward(k: int, tokens: list) -> list[torch.Tensor]:
        # Shard 0 also embeds the prompts; every shard its share of the captions.
        out = [model.get_text_features(**tokens[k]).pooler_output]
        if k == 0:
            out.append(model.get_text_features(**prompt_tokens).pooler_output)
        return out

    def text_backward(k: int, outputs: list, grads: list) -> list:
        return list(torch.autograd.grad(outputs[k], text_params, grads[k], allow_unused=True))

    report(STAGES[3], 0, config.text_steps)
    bar = tqdm(range(config.text_steps), desc="Text tower", disable=not progress)
    for step in bar:
        idx = torch.from_numpy(rng.choice(len(pool.scenes), config.text_batch_size, replace=False))
        batch_scenes = [pool.scenes[i][0] for i in idx.tolist()]
        texts, named = zip(*(caption(s, caption_rng) for s in batch_scenes), strict=True)
        match = _caption_matches(named, pool.truth_codes[idx])
        parts = split_evenly(len(texts), shards.n)
        # The tokenizer is not thread-safe: every shard's tokens are made here.
        tokens = [tokenizer(list(texts[part]), padding=True, return_tensors="pt") for part in parts]
        outputs = shards.map(lambda k: text_forward(k, tokens))  # noqa: B023 (called within the step)
        # The loss joins the shards (every caption against every image), on detached copies of their
        # embeddings; its gradients then flow back through each shard's tower side by side.
        leaves = [[o.detach().requires_grad_() for o in out] for out in outputs]
        loss, parts_of_loss = _text_loss(model, leaves, image_emb[idx], cell_emb[idx], unit, pool, idx, match, config)
        flat = [leaf for leaf_list in leaves for leaf in leaf_list]
        *leaf_grads, temperature_grad = torch.autograd.grad(loss, [*flat, model.temperature])
        grads, i = [], 0
        for leaf_list in leaves:
            grads.append(leaf_grads[i: i + len(leaf_list)])
            i += len(leaf_list)
        per_shard = shards.map(lambda k: text_backward(k, outputs, grads))  # noqa: B023 (called within the step)
        sum_gradients(per_shard, text_params)
        model.temperature.grad = temperature_grad
        optimizer.step()
        schedule.step()
        losses.append(parts_of_loss)
        bar.set_postfix(captions=f"{losses[-1][0]:.2f}", prompts=f"{losses[-1][1]:.2f}")
        report(STAGES[3], step + 1, config.text_steps)
    return losses


def _train_dual_encoder(folder, scene_config: SceneConfig, config: EncoderTrainConfig, seed: int, progress: bool,
                        report, shards: Shards) -> dict:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    model, processor = build_dual_encoder(scene_config.image_size, config, seed)
    n_directions = sum(len(VOCABULARY[f]) for f in _FAMILIES)
    generator = torch.Generator().manual_seed(seed + 1)  # not the global one: other threads may be seeding it
    directions = torch.nn.Parameter(torch.randn(n_directions, model.config.projection_dim, generator=generator) * 0.1)

    t = time.perf_counter()
    pool = _render_pool(model, processor, scene_config, config, seed, progress, report)
    rng = np.random.default_rng([seed, 8])
    timings["scenes"], t = time.perf_counter() - t, time.perf_counter()
    image_losses = _train_image_tower(model, directions, pool, config, shards, rng, progress, report)
    timings["image_tower"], t = time.perf_counter() - t, time.perf_counter()
    image_emb, cell_emb = _embed_pool(model, pool, shards, report)
    timings["pool_embeddings"], t = time.perf_counter() - t, time.perf_counter()
    text_losses = _train_text_tower(model, processor.tokenizer, directions, pool, image_emb, cell_emb, config,
                                    shards, rng, seed, progress, report)
    timings["text_tower"] = time.perf_counter() - t

    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
        parameter.grad = None
    folder = Path(folder)
    save_pretrained(folder, model, processor)
    image_last, text_last = np.mean(image_losses[-20:], axis=0), np.mean(text_losses[-20:], axis=0)
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "image_tower": {"attributes": float(image_last[0]), "regions": float(image_last[1])},
        "text_tower": {"captions": float(text_last[0]), "prompts": float(text_last[1]), "regions": float(text_last[2]),
                       "pull": float(text_last[3])},
    }
