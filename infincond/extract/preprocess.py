"""Fast image plans: the common Hugging Face image processors replicated as a PIL resize and centre crop
giving uint8 pixels (done in DataLoader workers), then one per-channel affine (rescale + normalise) done
batched in torch on the model's device.

Supported (class name with or without its ``Pil`` / ``Fast`` suffix): CLIP, ViT, SigLIP, ConvNeXT (its
``crop_pct`` resize-then-crop below 384 px), BiT and EfficientNet (ALIGN; ``rescale_offset`` and
``include_top``) image processors. Bilinear and bicubic resizes run in torch, on uint8, antialiased (the
vectorised kernels torchvision's resize uses, several times faster than PIL's); other filters run PIL's own
call. Tolerance against the PIL processors, in grey levels of the resized uint8 image: at most 2 on noise,
1 on photographs, under 0.1 on average; crops are identical and the affine agrees to float32 rounding. A
processor that is not supported, or a setting the plan does not cover (padding, ``longest_edge``...),
falls back to running the processor itself on each image in the workers (still in parallel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

#: Bump when the fast path changes the pixels it produces (it is part of the feature cache's fingerprint).
PREPROCESS_VERSION = 2

FAST_PROCESSORS = ("CLIPImageProcessor", "ViTImageProcessor", "SiglipImageProcessor", "ConvNextImageProcessor",
                   "BitImageProcessor", "EfficientNetImageProcessor")


def processor_name(processor: object) -> str:
    """The processor's class name without its backend suffix ("Pil", "Fast")."""
    name = type(processor).__name__
    for suffix in ("Pil", "Fast"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _size(value: object, key: str) -> int | None:
    """A field of a transformers ``SizeDict`` (or plain dict)."""
    got = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    return None if got is None else int(got)


@dataclass(frozen=True)
class ImagePlan:
    """How one model's image processor turns an RGB image into pixel values (3, H, W).

    Fast plans: ``resize`` ("shortest", edge, 0) or ("exact", height, width) with PIL ``resample``, then the
    centre ``crops`` (height, width) in order, giving uint8; then ``pixel * scale[c] + shift[c]`` in float32.
    A plan with a ``processor`` runs that processor instead (float32 pixels, no affine).
    """

    resize: tuple[str, int, int] | None = None
    resample: int = Image.Resampling.BILINEAR
    crops: tuple[tuple[int, int], ...] = ()
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    processor: object | None = None

    @property
    def fast(self) -> bool:
        return self.processor is None

    def identity(self) -> dict:
        """What determines the pixels, for the cache fingerprint."""
        if not self.fast:
            return {"processor": processor_name(self.processor), "config": self.processor.to_dict()}
        return {"fast": PREPROCESS_VERSION, "resize": self.resize, "resample": int(self.resample),
                "crops": self.crops, "scale": [round(v, 9) for v in self.scale],
                "shift": [round(v, 9) for v in self.shift]}

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step (the processor's rounding), before cropping."""
        if self.resize is None:
            return width, height
        mode, a, b = self.resize
        if mode == "exact":
            return b, a
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(a * long / short)
        return (a, new_long) if width <= height else (new_long, a)

    def pixels(self, image: Image.Image, original_size: tuple[int, int] | None = None,
               box: tuple[float, float, float, float] | None = None, array: np.ndarray | None = None) -> np.ndarray:
        """Pixels of one RGB image: uint8 (3, H, W) for a fast plan, float32 for a processor plan.

        A JPEG decoded in draft mode is smaller than the original: ``original_size`` (width, height) is the
        original's, from which the output size is computed, and ``box`` the area of ``image`` it covers.
        ``array``: the image as (H, W, 3) uint8, when already at hand (two plans share one conversion)."""
        if not self.fast:
            return np.asarray(self.processor(images=[image], return_tensors="np")["pixel_values"][0], dtype=np.float32)
        if self.resize is not None:
            array = resize(image, self.resized_size(*(original_size or image.size)), self.resample, box, array)
        elif array is None:
            array = np.asarray(image)
        for height, width in self.crops:
            array = centre_crop(array, height, width)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel values (B, 3, H, W) float32 from what :meth:`pixels` gave, stacked (on any device)."""
        if not self.fast:
            return pixels.float()
        scale = torch.tensor(self.scale, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        shift = torch.tensor(self.shift, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        return pixels.to(torch.float32).mul_(scale).add_(shift)  # uint8 in, so the float copy is ours to modify

    def __call__(self, images: Sequence[Image.Image], device: str | torch.device = "cpu") -> torch.Tensor:
        """Pixel values (B, 3, H, W) float32 on ``device`` for RGB images (the inference path)."""
        stacked = torch.from_numpy(np.stack([self.pixels(image) for image in images]))
        return self.normalise(stacked.to(device))

    def needed_size(self, width: int, height: int) -> tuple[int, int] | None:
        """Smallest (width, height) the image must keep for the resize to see it at full detail;
        None when the plan needs the image as it is."""
        if not self.fast or self.resize is None:
            return None
        return self.resized_size(width, height)


#: Filters torch resizes (antialiased, on uint8, with the kernels torchvision's resize uses): within one grey
#: level of PIL's, several times faster. Other filters, and drafted images, go through PIL.
TORCH_FILTERS = {int(Image.Resampling.BILINEAR): "bilinear", int(Image.Resampling.BICUBIC): "bicubic"}


def resize(image: Image.Image, size: tuple[int, int], resample: int,
           box: tuple[float, float, float, float] | None = None, array: np.ndarray | None = None) -> np.ndarray:
    """An RGB image resized to ``size`` (width, height), as (H, W, 3) uint8. Bilinear and bicubic run in
    torch (uint8, antialiased, channels-last: its vectorised kernels), the others in PIL. ``array``: the
    image as a writable (H, W, 3) uint8 array, when already at hand."""
    mode = TORCH_FILTERS.get(int(resample))
    if mode is None or box is not None or image.size == size:
        return np.asarray(image.resize(size, resample=resample, box=box) if image.size != size or box else image)
    array = np.array(image, dtype=np.uint8) if array is None else array
    pixels = torch.from_numpy(array).permute(2, 0, 1)[None]  # channels-last strides
    resized = torch.nn.functional.interpolate(pixels, size=(size[1], size[0]), mode=mode, antialias=True)
    return resized[0].permute(1, 2, 0).numpy()


def centre_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """The transformers centre crop of an (H, W, C) array: offsets floor((H - h) / 2), zero padding
    (centred, the extra pixel after) where the image is smaller than the crop."""
    h, w = array.shape[:2]
    if h < height or w < width:
        padded = np.zeros((max(h, height), max(w, width), array.shape[2]), dtype=array.dtype)
        top, left = -(-(padded.shape[0] - h) // 2), -(-(padded.shape[1] - w) // 2)
        padded[top : top + h, left : left + w] = array
        array = padded
        h, w = array.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return array[top : top + height, left : left + width]


def _affine(processor: object, mean: Sequence[float], std: Sequence[float]) -> tuple[tuple, tuple]:
    """Per-channel (scale, shift) with pixel * scale + shift = the processor's rescale, normalise (and
    EfficientNet's offset and include_top), composed in float64."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    scale = np.full(3, float(processor.rescale_factor) if processor.do_rescale else 1.0)
    shift = np.full(3, -1.0 if processor.do_rescale and getattr(processor, "rescale_offset", False) else 0.0)
    if processor.do_normalize:
        scale, shift = scale / std, (shift - mean) / std
    if getattr(processor, "include_top", False):  # EfficientNet divides by the std a second time
        scale, shift = scale / std, shift / std
    return tuple(float(v) for v in scale), tuple(float(v) for v in shift)


def _geometry(processor: object, name: str) -> tuple[tuple[str, int, int] | None, tuple[tuple[int, int], ...]] | None:
    """(resize, crops) of a supported processor, or None when its settings are not covered."""
    size = processor.size
    resize = None
    crops: list[tuple[int, int]] = []
    if processor.do_resize:
        edge, height, width = _size(size, "shortest_edge"), _size(size, "height"), _size(size, "width")
        if _size(size, "longest_edge") or _size(size, "max_height"):
            return None
        if name == "ConvNextImageProcessor":
            if edge is None:
                return None
            if edge < 384:  # resize to edge / crop_pct, then crop (edge, edge): ConvNeXT's evaluation recipe
                resize = ("shortest", int(edge / float(processor.crop_pct)), 0)
                crops.append((edge, edge))
            else:
                resize = ("exact", edge, edge)
        elif edge is not None:
            resize = ("shortest", edge, 0)
        elif height is not None and width is not None:
            resize = ("exact", height, width)
        else:
            return None
    if getattr(processor, "do_center_crop", False):
        crop = processor.crop_size
        crops.append((_size(crop, "height"), _size(crop, "width")))
    return resize, tuple(crops)


def _resample(processor: object) -> int | None:
    value = getattr(processor, "resample", None)
    if value is None:
        return int(Image.Resampling.BILINEAR)
    try:
        return int(value)
    except (TypeError, ValueError):  # a torchvision InterpolationMode: not a PIL filter
        return None


def image_plan(processor: object) -> ImagePlan:
    """The fast plan replicating ``processor`` (an image processor, or a processor holding one), or a plan
    that runs the processor itself when it is not one the fast path covers."""
    processor = getattr(processor, "image_processor", processor)
    name = processor_name(processor)
    fallback = ImagePlan(processor=processor)
    if name not in FAST_PROCESSORS or getattr(processor, "do_pad", False):
        return fallback
    geometry, resample = _geometry(processor, name), _resample(processor)
    if geometry is None or resample is None:
        return fallback
    mean = np.broadcast_to(np.asarray(processor.image_mean if processor.image_mean is not None else 0.0, float), 3)
    std = np.broadcast_to(np.asarray(processor.image_std if processor.image_std is not None else 1.0, float), 3)
    scale, shift = _affine(processor, mean, std)
    return ImagePlan(resize=geometry[0], resample=resample, crops=geometry[1], scale=scale, shift=shift)


class PlannedModel:
    """A Hugging Face model that takes images through the fast plan of its own image processor: what the
    teacher and the concept encoder have in common (where they run, how their pixels are made)."""

    def __init__(self, model: torch.nn.Module, processor: object, repo_id: str, revision: str,
                 device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.repo_id = repo_id
        self.revision = revision
        self.device = torch.device(device)
        #: The fast preprocessing plan replicating the model's image processor.
        self.image_plan = image_plan(processor)

    def to(self, device: str | torch.device):
        """Move the model to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images preprocessed as the model's image processor does (the fast plan): (B, 3, H, W)."""
        return self.image_plan(list(images), self.device)
