"""The Shapes world's teacher: a small ResNet trained on the biased ``train`` split, so that it leans on
the spurious background, as image classifiers trained on Waterbirds do."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .parallel import save_pretrained, seeded
from .scenes import SHAPES


@dataclass
class TeacherTrainConfig:
    """Architecture and schedule of the world's teacher (few epochs: enough to be accurate where the
    correlation holds, too few to stop leaning on it)."""

    hidden_sizes: tuple[int, ...] = (32, 64, 128)
    epochs: float = 3.0
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


def pixel_affine(image_processor) -> tuple[torch.Tensor, torch.Tensor]:
    """The processor's per-channel map from [0, 1] pixels to model inputs, as (scale, offset) each
    (1, 3, 1, 1), read off a black and a white image, so training sees exactly what the processor gives
    (valid for processors that resize to the images' own size and then rescale and normalise)."""
    from PIL import Image

    black, white = (image_processor(images=[Image.new("RGB", (64, 64), (v, v, v))], return_tensors="pt")["pixel_values"]
                    [0, :, 0, 0].float() for v in (0, 255))
    return (white - black).view(1, 3, 1, 1), black.view(1, 3, 1, 1)


def model_input(uint8: torch.Tensor, scale, offset) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> a model's pixel values (:func:`pixel_affine`), channels-last (convolutions'
    fastest layout on CPU)."""
    return (uint8.float() / 255.0 * scale + offset).contiguous(memory_format=torch.channels_last)


def images_to_uint8(images) -> torch.Tensor:
    """PIL RGB images of one size as a uint8 tensor (N, 3, H, W)."""
    return torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).contiguous()


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0 over ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)),
    )


def build_teacher(image_size: int, config: TeacherTrainConfig, seed: int):
    """A randomly initialised ResNetForImageClassification over the world's classes and its processor."""
    from transformers import AutoModelForImageClassification, ConvNextImageProcessor, ResNetConfig

    labels = {"id2label": dict(enumerate(SHAPES)), "label2id": {n: i for i, n in enumerate(SHAPES)}}
    model_config = ResNetConfig(embedding_size=config.hidden_sizes[0], hidden_sizes=list(config.hidden_sizes),
                                depths=[1] * len(config.hidden_sizes), layer_type="basic",
                                downsample_in_first_stage=False, **labels)
    with seeded(seed):  # the initial weights come from torch's global generator
        model = AutoModelForImageClassification.from_config(model_config)
    processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
    return model, processor


def train_teacher(folder: str | os.PathLike, train_images, train_labels: np.ndarray, image_size: int,
                  config: TeacherTrainConfig, seed: int, progress: bool = True, *,
                  report: Callable[[int, int], None] | None = None) -> dict:
    """Train the teacher on (images, labels) of the biased split and save it with its processor into
    ``folder``. Returns a training summary. ``report(done, total)`` is called after every step."""
    start = time.perf_counter()
    model, processor = build_teacher(image_size, config, seed)
    model.to(memory_format=torch.channels_last)  # the fastest layout for convolutions on CPU
    pixels = images_to_uint8(train_images)
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    scale, offset = pixel_affine(processor)
    n = len(labels)
    steps = max(1, math.ceil(config.epochs * n / config.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = cosine_schedule(optimizer, steps, warmup=max(1, steps // 20))
    rng = np.random.default_rng([seed, 11])
    model.train()
    losses = []
    report = report or (lambda done, total: None)
    report(0, steps)
    bar = tqdm(range(steps), desc="Training teacher", disable=not progress)
    for _ in bar:
        idx = torch.from_numpy(rng.choice(n, min(config.batch_size, n), replace=False))
        batch = model_input(pixels[idx], scale, offset)
        if rng.random() < 0.5:
            batch = batch.flip(-1)
        loss = F.cross_entropy(model(pixel_values=batch).logits, labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        report(len(losses), steps)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    folder = Path(folder)
    save_pretrained(folder, model, processor)
    return {"seconds": time.perf_counter() - start, "steps": steps, "final_loss": float(np.mean(losses[-20:]))}
