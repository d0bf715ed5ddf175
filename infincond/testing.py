"""Tiny, real Hugging Face models and datasets built from small configs, for tests and benchmarks.

They are saved in Hugging Face format and loaded back through the same code as Hub repo ids.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .demo.scenes import COLOURS

SHAPES = ("circle", "square", "triangle")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-to-printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=False))


def build_clip_tokenizer(words: Sequence[str]):
    """A real CLIP byte-level BPE tokenizer whose merges spell out ``words`` as single tokens
    (any other text falls back to characters)."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in sorted({w.lower() for text in words for w in text.split() if w.isascii() and w.isalpha()}):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            pair = (current, symbol)
            current = current + symbol
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            vocab.setdefault(current, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build_tiny_clip(folder: str | os.PathLike, words: Sequence[str] = (), *, image_size: int = 32, patch_size: int = 8,
                    hidden_size: int = 32, layers: int = 2, heads: int = 2, projection_dim: int = 16,
                    seed: int = 0) -> Path:
    """Save a small random CLIPModel with its processor (tokenizer + image processor) into ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(list(words) + ["a photo of"])
    vocab_size = len(tokenizer)
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    config = CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
                     "num_hidden_layers": layers, "num_attention_heads": heads, "max_position_embeddings": 32,
                     "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": layers,
                       "num_attention_heads": heads, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    folder = Path(folder)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_siglip(folder: str | os.PathLike, words: Sequence[str] = (), *, image_size: int = 32,
                      patch_size: int = 8, hidden_size: int = 32, layers: int = 2, heads: int = 2,
                      seed: int = 0) -> Path:
    """Save a small random SiglipModel (attention-pooling head, last-token text pooling) with a processor."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(list(words) + ["a photo of"])
    tokenizer.model_max_length = 16
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    common = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": layers,
              "num_attention_heads": heads}
    config = SiglipConfig(
        text_config={**common, "vocab_size": len(tokenizer), "max_position_embeddings": 16, "pad_token_id": eos,
                     "eos_token_id": eos, "bos_token_id": eos},
        vision_config={**common, "image_size": image_size, "patch_size": patch_size},
    )
    model = SiglipModel(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_teacher(folder: str | os.PathLike, class_names: Sequence[str], *, arch: str = "vit",
                       image_size: int = 32, generic_labels: bool = False, seed: int = 0) -> Path:
    """Save a small random image classifier ("vit", "resnet" or "convnext") with its image processor.

    ``generic_labels`` stores ``LABEL_i`` names, as many Hub teachers do."""
    from transformers import (
        AutoModelForImageClassification,
        ConvNextConfig,
        ConvNextImageProcessor,
        ResNetConfig,
        ViTConfig,
        ViTImageProcessor,
    )

    torch.manual_seed(seed)
    names = [f"LABEL_{i}" for i in range(len(class_names))] if generic_labels else list(class_names)
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    if arch == "vit":
        config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, **labels)
        processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    elif arch == "resnet":
        config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", **labels)
        processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
    elif arch == "convnext":
        config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], **labels)
        processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
    else:
        raise ValueError(f"arch must be 'vit', 'resnet' or 'convnext', not {arch!r}")
    model = AutoModelForImageClassification.from_config(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def draw_shape(shape: str, colour: str, size: int = 32, background: tuple[int, int, int] = (245, 245, 245),
               rng: np.random.Generator | None = None) -> Image.Image:
    """One RGB image of a coloured shape on a plain background, at a random position and scale."""
    rng = rng or np.random.default_rng()
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.2, 0.35)
    cx, cy = rng.uniform(radius, size - radius, 2)
    fill = tuple(int(np.clip(v + rng.normal(0, 10), 0, 255)) for v in COLOURS[colour])
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    return image


def photo_jpeg(rng: np.random.Generator, width: int = 500, height: int = 375) -> bytes:
    """A photo-like JPEG (quality 90): blurred random shapes plus sensor-like noise, for the extraction
    engine's tests and benchmark (ImageNet-sized by default)."""
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box,
                                                                 fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    pixels = (np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.int16)
              + rng.normal(0, 8, (height, width, 3)))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_shapes_dataset(n: int = 60, *, classes: Sequence[str] = ("red", "green", "blue"), size: int = 32,
                        seed: int = 0):
    """A small ``datasets.Dataset`` of coloured shapes: an ``Image`` column, a ``ClassLabel`` column named
    ``label`` (the colour) and a plain ``shape`` column."""
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n)
    shapes = rng.choice(SHAPES, n)
    images = [draw_shape(str(s), classes[int(c)], size, rng=rng) for s, c in zip(shapes, labels, strict=False)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(classes)), "shape": Value("string")})
    return Dataset.from_dict({"image": images, "label": labels.tolist(), "shape": shapes.tolist()}, features=features)


def planted_problem(n: int = 2000, k: int = 60, c: int = 5, nec: int = 4, noise: float = 0.0,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic concept scores (N, K) in [0, 1] and the logits (N, C) of a planted sparse linear teacher
    that uses ``nec`` concepts per class; returns (concept_scores, teacher_logits, true_weight (C, K))."""
    rng = np.random.default_rng(seed)
    concept_scores = np.clip(rng.normal(0.25, 0.08, (n, k)) + (rng.random((n, k)) < 0.15) * 0.3,
                             0, 1).astype(np.float32)
    true_weight = np.zeros((c, k))
    for cls in range(c):
        chosen = rng.choice(k, nec, replace=False)
        true_weight[cls, chosen] = rng.choice([-1.0, 1.0], nec) * rng.uniform(1.0, 3.0, nec)
    standardised = (concept_scores - concept_scores.mean(0)) / concept_scores.std(0)
    teacher_logits = standardised @ true_weight.T + noise * rng.normal(size=(n, c))
    return concept_scores, teacher_logits.astype(np.float32), true_weight


def planted_features(n: int = 600, k: int = 20, c: int = 3, nec: int = 3, *, spurious: float = 2.5,
                     val_fraction: float = 0.25, seed: int = 0, labelled: bool = True):
    """A :class:`~infincond.features.FeatureSet` over :func:`planted_problem`, whose teacher also leans on a
    spurious concept ("concept 0") for the first class, while the labels follow the planted rule only."""
    from .features import FeatureSet

    scores, logits, true_weight = planted_problem(n, k, c, nec, seed=seed)
    standardised = (scores - scores.mean(0)) / scores.std(0)
    teacher_logits = (logits + spurious * standardised[:, :1] * (np.arange(c) == 0)).astype(np.float32)
    labels = (standardised @ true_weight.T).argmax(1) if labelled else np.full(n, -1)
    rng = np.random.default_rng(seed + 1)
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.permutation(n)[: int(round(n * val_fraction))]] = True
    class_names = [f"class {i}" for i in range(c)]
    return FeatureSet(
        concept_scores=scores,
        best_region=np.zeros((n, k), dtype=np.int16),
        region_boxes=np.array([[0, 0, 1, 1]], float),
        teacher_logits=teacher_logits,
        labels=labels.astype(np.int64),
        image_ids=np.arange(n),
        is_val=is_val,
        concept_embeddings=rng.normal(size=(k, 8)).astype(np.float32),
        concepts=[f"concept {i}" for i in range(k)],
        concept_sources=["planted"] * k,
        class_names=class_names,
        dataset_label_names=class_names if labelled else None,
        provenance={"fingerprint": f"planted-{seed}"},
    )


SHORTCUT_CLASSES = ("circle", "square", "triangle")


def shortcut_features(n: int = 1500, *, biased: bool = True, shortcut: float = 5.0, noise_concepts: int = 12,
                      val_fraction: float = 0.25, seed: int = 0):
    """A :class:`~infincond.features.FeatureSet` of a world with a planted shortcut, as the Shapes world's:
    three classes (circle, square, triangle), each shape's concept present on its class's images; a
    background concept, "water", under most circles when ``biased`` (90%, against 5% of the others; 30% of
    every class otherwise); "water pipe" and "water drops", which are water seen again with noise (its
    proxies); and ``noise_concepts`` unrelated ones. The teacher reads the shapes, plus ``shortcut`` x water
    for circle, so it takes other shapes on water for circles."""
    from .features import FeatureSet

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    on_water = rng.random(n) < (np.where(labels == 0, 0.9, 0.05) if biased else 0.3)
    shapes = np.where(labels[:, None] == np.arange(3), 0.6, 0.2) + rng.normal(0, 0.08, (n, 3))
    water = 0.15 + 0.45 * on_water + rng.normal(0, 0.04, n)
    proxies = water[:, None] + rng.normal(0, 0.04, (n, 2))
    scores = np.clip(np.column_stack([shapes, water, proxies, rng.uniform(0.1, 0.5, (n, noise_concepts))]), 0, 1)
    logits = 4.0 * (shapes - 0.4) + rng.normal(0, 0.2, (n, 3))
    logits[:, 0] += shortcut * (water - 0.3)
    concepts = [*SHORTCUT_CLASSES, "water", "water pipe", "water drops", *(f"noise {i}" for i in range(noise_concepts))]
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.permutation(n)[: int(round(n * val_fraction))]] = True
    k = len(concepts)
    return FeatureSet(
        concept_scores=scores.astype(np.float32), best_region=np.zeros((n, k), dtype=np.int16),
        region_boxes=np.array([[0, 0, 1, 1]], float), teacher_logits=logits.astype(np.float32),
        labels=labels.astype(np.int64), image_ids=np.arange(n), is_val=is_val,
        concept_embeddings=rng.normal(size=(k, 8)).astype(np.float32), concepts=concepts,
        concept_sources=["planted"] * k, class_names=list(SHORTCUT_CLASSES),
        dataset_label_names=list(SHORTCUT_CLASSES),
        provenance={"fingerprint": f"shortcut-{seed}-{int(biased)}", "background": np.where(on_water, "water", "land")})
