"""The extraction engine against the single-threaded loop it replaces, side by side in one run.

1. Input pipeline (the GPU ceiling): tiny CLIP and ViT models with 224 px inputs and 112 px patches, so
   their forward passes are nearly free, on ImageNet-sized JPEGs (500 x 375, quality 90). Extraction img/s
   of the engine (DataLoader workers, fast plans) against the previous loop: one thread decoding each
   image with the datasets library and running both Hugging Face image processors, batch after batch. On
   a CPU both sides run the tiny forwards with one intra-op thread (on a GPU they take no CPU thread).
2. Real-shaped models: a CLIP ViT-B/32 encoder (``CLIPConfig()`` defaults) and a ViT-B/16 teacher
   (``ViTConfig()`` defaults, 10 labels), random weights: forward-only img/s of the two models on
   preprocessed tensors against end-to-end extraction img/s.
3. An interruption at 50%: a subprocess extracting the tiny-model features is killed with SIGKILL once it
   has forwarded half the images and half a shard more (so a shard is in progress), then run again; the
   work lost (images forwarded twice) against one shard, and the wall-clock time lost.
4. Adding 10 concepts to the real-shaped features from their kept region embeddings against extracting
   them again with the larger corpus.
5. The engine alone ("instant models", any machine): a teacher with 1,000 classes and an encoder with
   CLIP ViT-B/32's 50 regions x 512 whose forwards cost nothing (they hand back tensors of those shapes),
   on small JPEGs, with and without kept regions. The main process's CPU time per image, split into the
   device's share (forwards, normalisation, fp16 rounding, the presence product: GPU work on a GPU) and
   its own bookkeeping (the main loop, the shard writer thread, the final assembly), and the engine's
   ceiling in img/s (what the main loop alone allows) beside the measured rate.

Run: python benchmarks/bench_extract.py [--images 1024] [--real-images 64] [--device cuda --precision bf16
--num-workers 14 --images 20000] [--parts 5 --instant-images 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from infincond import (
    ConceptCorpus,
    ConceptEncoder,
    DataConfig,
    ExtractConfig,
    ImageSource,
    Teacher,
    extract_features,
)
from infincond.concepts.presence import concept_presence
from infincond.testing import build_clip_tokenizer, photo_jpeg

CONCEPTS = ["red", "green", "blue", "circle", "square", "triangle", "white", "dark", "bright", "round", "striped",
            "dotted", "grass", "water", "sand", "snow", "wheel", "sky", "fur", "metal"]
NEW_CONCEPTS = ["yellow", "purple", "orange", "star", "cross", "diamond", "rock", "wood", "glass", "cloud"]


def jpeg_dataset(folder: Path, n: int, unique: int = 2048) -> Path:
    """A saved datasets dataset of ``n`` JPEGs (an Image column of bytes) and 10 labels: ``unique`` distinct
    photos, repeated (each row is still decoded on its own, so the cost per image is the same)."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    if (folder / "dataset_info.json").exists():
        return folder
    rng = np.random.default_rng(0)
    photos = [photo_jpeg(rng) for _ in range(min(n, unique))]
    rows = [{"bytes": photos[i % len(photos)], "path": None} for i in range(n)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[f"class {i}" for i in range(10)])})
    Dataset.from_dict({"image": rows, "label": [i % 10 for i in range(n)]}, features=features).save_to_disk(str(folder))
    return folder


def tiny_repos(root: Path) -> tuple[Path, Path]:
    """Tiny CLIP and ViT repos with 224 px inputs, 112 px patches and width 16 (forwards nearly free)."""
    from infincond.testing import build_tiny_clip

    clip, vit = root / "clip-224-w16", root / "vit-224-w16"
    if not (clip / "config.json").exists():
        build_tiny_clip(clip, CONCEPTS + NEW_CONCEPTS, image_size=224, patch_size=112, hidden_size=16,
                        projection_dim=16)
    if not (vit / "config.json").exists():
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        torch.manual_seed(0)
        labels = {"id2label": {i: f"class {i}" for i in range(10)}, "label2id": {f"class {i}": i for i in range(10)}}
        config = ViTConfig(image_size=224, patch_size=112, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, **labels)
        ViTForImageClassification(config).eval().save_pretrained(vit)
        ViTImageProcessor().save_pretrained(vit)
    return clip, vit


def real_models(device: str) -> tuple[Teacher, ConceptEncoder]:
    """CLIP ViT-B/32 and ViT-B/16 shapes with random weights (a forward costs the same as a trained one's)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    names = [f"class {i}" for i in range(10)]
    vit = ViTForImageClassification(ViTConfig(num_labels=10, id2label=dict(enumerate(names))))
    teacher = Teacher(vit, ViTImageProcessor(), "random-vit-b16", "none", names, device=device)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(),
                              tokenizer=build_clip_tokenizer(CONCEPTS + NEW_CONCEPTS))
    encoder = ConceptEncoder(CLIPModel(CLIPConfig()), processor, "random-clip-vit-b32", "none", region_mode="dense",
                             device=device)
    return teacher, encoder


def old_loop(source: ImageSource, teacher: Teacher, encoder: ConceptEncoder, concept_embeddings: torch.Tensor,
             batch_size: int) -> None:
    """The single-threaded extraction this engine replaced: datasets decoding, both HF image processors."""
    image_processor = encoder.processor.image_processor
    with torch.inference_mode():
        for _positions, images in source.batches(batch_size):
            encoder_pixels = image_processor(images=images, return_tensors="pt")["pixel_values"].to(encoder.device)
            concept_presence(encoder.regions_from_pixels(encoder_pixels).embeddings,
                             concept_embeddings.to(encoder.device))
            teacher_pixels = teacher.processor(images=images, return_tensors="pt")["pixel_values"].to(teacher.device)
            teacher.logits_from_pixels(teacher_pixels).cpu()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the input workers), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_cpu(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn()."""
    cpu = cpu_seconds()
    wall = timed(fn)
    return wall, cpu_seconds() - cpu


def config_of(args: argparse.Namespace, **overrides) -> ExtractConfig:
    settings = {"batch_size": args.batch_size, "num_workers": args.num_workers, "device": args.device,
                "precision": args.precision, "shard_size": args.shard_size, **overrides}
    return ExtractConfig(**settings)


def input_pipeline(args: argparse.Namespace, work: Path, dataset: Path, clip: Path, vit: Path) -> dict:
    source = ImageSource.load(DataConfig(str(dataset), samples=args.images))
    device = None if args.device == "auto" else args.device
    teacher = Teacher.from_pretrained(str(vit), dataset_label_names=source.label_names, device=device)
    encoder = ConceptEncoder.from_pretrained(str(clip), device=device)
    corpus = ConceptCorpus.from_list(CONCEPTS)
    concept_embeddings = encoder.encode_text(corpus.prompts())
    runs = {"old": [], "engine": [], "engine, 0 workers": []}
    threads = torch.get_num_threads()
    if encoder.device.type == "cpu":
        # One intra-op thread for the tiny forwards on both sides, as on a GPU where they take no CPU threads:
        # on a shared machine, a pool of 2 stalls every tiny op at its barrier, which is not what is measured.
        torch.set_num_threads(1)
    for repeat in range(args.repeats):  # interleaved, the median kept
        runs["old"].append(timed_cpu(lambda: old_loop(source, teacher, encoder, concept_embeddings, args.batch_size)))
        for name, workers in (("engine", args.num_workers), ("engine, 0 workers", 0)):
            cache = work / f"cache-pipeline-{workers}-{repeat}"
            config = config_of(args, num_workers=workers)
            runs[name].append(timed_cpu(lambda c=cache, k=config: extract_features(source, teacher, encoder, corpus, k,
                                                                                   cache_dir=c, progress=False)))
    torch.set_num_threads(threads)
    features = extract_features(source, teacher, encoder, corpus, config_of(args),
                                cache_dir=work / f"cache-pipeline-{args.num_workers}-0", progress=False)
    n = len(source)
    rates = {name: n / statistics.median(w for w, _ in times) for name, times in runs.items()}
    cpu_ms = {name: 1000 * statistics.median(c for _, c in times) / n for name, times in runs.items()}
    return {"images": n, "rates": rates, "cpu_ms": cpu_ms, "runtime": features.provenance["runtime"]}


def real_shaped(args: argparse.Namespace, work: Path, dataset: Path) -> dict:
    source = ImageSource.load(DataConfig(str(dataset), samples=args.real_images))
    teacher, encoder = real_models("cpu" if args.device == "auto" and not torch.cuda.is_available() else
                                   ("cuda" if args.device == "auto" else args.device))
    corpus = ConceptCorpus.from_list(CONCEPTS)
    config = config_of(args, keep_regions=True)
    precision = config.resolved_precision()
    from infincond.extract.runtime import autocast

    images = source.images(range(min(len(source), args.batch_size)))
    teacher_pixels, encoder_pixels = teacher.pixel_values(images), encoder.pixel_values(images)
    concept_embeddings = encoder.encode_text(corpus.prompts()).to(encoder.device)

    def forward_only() -> None:
        with torch.inference_mode(), autocast(encoder.device, precision):
            for _ in range(0, len(source), len(images)):
                concept_presence(encoder.regions_from_pixels(encoder_pixels).embeddings, concept_embeddings)
                teacher.logits_from_pixels(teacher_pixels).cpu()
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()

    forward_only()  # warm-up
    forward = [timed_cpu(forward_only)]
    end_to_end = timed_cpu(lambda: extract_features(source, teacher, encoder, corpus, config,
                                                    cache_dir=work / "cache-real", progress=False))
    forward.append(timed_cpu(forward_only))  # before and after: the machine may be shared
    features = extract_features(source, teacher, encoder, corpus, config, cache_dir=work / "cache-real", progress=False)
    features.with_concepts(NEW_CONCEPTS[:1], encoder)  # warm-up of the text tower
    added = min(timed(lambda: features.with_concepts(NEW_CONCEPTS, encoder)) for _ in range(3))
    again = timed(lambda: extract_features(source, teacher, encoder, corpus + NEW_CONCEPTS, config,
                                           cache_dir=work / "cache-real-again", progress=False))
    n = len(source)
    batches = -(-n // len(images))
    return {"images": n, "forward": [batches * len(images) / wall for wall, _ in forward],
            "forward_cpu_s_per_img": statistics.mean(cpu for _, cpu in forward) / (batches * len(images)),
            "end_to_end": n / end_to_end[0], "end_to_end_cpu_s_per_img": end_to_end[1] / n,
            "with_concepts_s": added, "reextract_s": again, "runtime": features.provenance["runtime"]}


INSTANT_CLASSES, INSTANT_REGIONS, INSTANT_DIM = 1000, 50, 512  # ImageNet's classes; CLIP ViT-B/32's regions


def small_jpeg_dataset(folder: Path, n: int) -> Path:
    """``n`` 224 x 224 JPEGs (64 distinct ones, repeated): cheap to decode, so the engine is what is timed."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    if (folder / "dataset_info.json").exists():
        return folder
    import io

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(64):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).resize((224, 224)).save(buffer, "JPEG")
        photos.append(buffer.getvalue())
    rows = [{"bytes": photos[i % len(photos)], "path": None} for i in range(n)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[f"class {i}" for i in range(10)])})
    Dataset.from_dict({"image": rows, "label": [i % 10 for i in range(n)]}, features=features).save_to_disk(str(folder))
    return folder


class ThreadClock:
    """CPU seconds (``time.thread_time``) the calling threads spend in wrapped functions, by name: the
    device's share (what a GPU would do), the main loop, the writer thread, the assembly."""

    def __init__(self, *names: str) -> None:
        self.seconds = dict.fromkeys(names, 0.0)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def wrap(self, name: str, fn):
        def timed_call(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.thread_time() - start

        return timed_call


def instant_models(root: Path, clock: ThreadClock) -> tuple[Teacher, ConceptEncoder]:
    """A teacher with 1,000 classes and a dense encoder with 50 regions x 512 (ViT-B/32's shapes) whose
    forwards return preallocated tensors of the real shapes: what is left to time is the engine."""
    from types import SimpleNamespace

    from infincond.testing import build_tiny_clip

    clip, vit = root / "clip-instant-b32-shapes", root / "vit-instant-1000"
    if not (clip / "config.json").exists():
        build_tiny_clip(clip, CONCEPTS + NEW_CONCEPTS, image_size=224, patch_size=32, hidden_size=16,
                        projection_dim=INSTANT_DIM)
    if not (vit / "config.json").exists():
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        names = {i: f"class {i}" for i in range(INSTANT_CLASSES)}
        config = ViTConfig(image_size=224, patch_size=112, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, id2label=names, label2id={v: k for k, v in names.items()})
        ViTForImageClassification(config).eval().save_pretrained(vit)
        ViTImageProcessor().save_pretrained(vit)
    teacher = Teacher.from_pretrained(str(vit), device="cpu")
    encoder = ConceptEncoder.from_pretrained(str(clip), region_mode="dense", device="cpu")
    assert len(encoder.region_boxes) == INSTANT_REGIONS, len(encoder.region_boxes)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1024, INSTANT_CLASSES, generator=generator)
    regions = torch.randn(1024, INSTANT_REGIONS, INSTANT_DIM, generator=generator)
    regions = torch.nn.functional.normalize(regions, dim=-1)
    boxes = encoder.region_boxes
    teacher.logits_from_pixels = clock.wrap("device", lambda pixels: logits[: len(pixels)])
    encoder.regions_from_pixels = clock.wrap("device", lambda pixels: SimpleNamespace(
        embeddings=regions[: len(pixels) // encoder.views_per_image], boxes=boxes))
    return teacher, encoder


def instant_engine(args: argparse.Namespace, work: Path, root: Path) -> list[dict]:
    """The engine alone, with and without kept regions: wall img/s and the main process's CPU ms per image."""
    import infincond.extraction as engine
    from infincond.extract.preprocess import ImagePlan
    from infincond.extract.shards import ShardStore

    dataset = small_jpeg_dataset(root / f"small-jpegs-{args.instant_images}", args.instant_images)
    source = ImageSource.load(DataConfig(str(dataset), samples=args.instant_images))
    corpus = ConceptCorpus.from_list(CONCEPTS + NEW_CONCEPTS)
    clock = ThreadClock("loop", "writer", "assemble", "device")
    teacher, encoder = instant_models(root, clock)
    patches = [(engine, "_compute", "loop"), (engine, "_assemble", "assemble"),
               *[(ShardStore, name, "writer")  # this engine's writes, or an older one's
                 for name in ("write", "write_rows", "seal") if hasattr(ShardStore, name)],
               (engine, "concept_presence", "device"), (engine, "stored_regions", "device"),
               (ImagePlan, "normalise", "device")]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, what in patches:
        setattr(owner, name, clock.wrap(what, getattr(owner, name)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the device's share in one thread, as the loop's own work is
    rows = []
    try:
        for keep in (True, False):
            runs = []
            for repeat in range(args.repeats):
                clock.reset()
                config = config_of(args, device="cpu", precision="fp32", keep_regions=keep,
                                   shard_size=ExtractConfig().shard_size)  # the default shards
                cache = work / f"cache-instant-{keep}-{repeat}"
                wall = timed(lambda c=config, d=cache: extract_features(source, teacher, encoder, corpus, c,
                                                                       cache_dir=d, progress=False))
                runs.append({"wall": wall, **clock.seconds})
            n = len(source)
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            rows.append({"keep_regions": keep, "images": n, "rate": n / median["wall"],
                         **{f"{key}_ms": 1000 * median[key] / n for key in ("loop", "writer", "assemble", "device")}})
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        torch.set_num_threads(threads)
    return rows


CHILD = """
import json, os, sys, time
from infincond import ConceptCorpus, ConceptEncoder, DataConfig, ExtractConfig, ImageSource, Teacher, extract_features
dataset, clip, vit, cache, settings = sys.argv[1:6]
settings = json.loads(settings)
start = time.perf_counter()
source = ImageSource.load(DataConfig(dataset, samples=settings.pop("images")))
device = None if settings["device"] == "auto" else settings["device"]
teacher = Teacher.from_pretrained(vit, dataset_label_names=source.label_names, device=device)
encoder = ConceptEncoder.from_pretrained(clip, device=device)
log = os.open(sys.argv[6], os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # images forwarded, kept through a SIGKILL
forward = teacher.logits_from_pixels
teacher.logits_from_pixels = lambda pixels: (os.write(log, b"%d\\n" % len(pixels)), forward(pixels))[1]
loaded = time.perf_counter()
extract_features(source, teacher, encoder, ConceptCorpus.from_list(settings.pop("concepts")), ExtractConfig(**settings),
                 cache_dir=cache, progress=False)
print(json.dumps({"startup": loaded - start, "extract": time.perf_counter() - loaded}))
"""


def interruption(args: argparse.Namespace, work: Path, dataset: Path, clip: Path, vit: Path) -> dict:
    settings = {
        "images": args.images,
        "concepts": CONCEPTS,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": args.device,
        "precision": args.precision,
        "shard_size": args.shard_size,
    }
    n_shards = -(-args.images // args.shard_size)

    def child(cache: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(dataset), str(clip), str(vit), str(cache),
                                 json.dumps(settings), str(cache) + ".forwarded"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def finish(process: subprocess.Popen) -> dict:
        out, _ = process.communicate()
        return json.loads(out.strip().splitlines()[-1])

    def forwarded(cache: Path) -> int:
        log = Path(str(cache) + ".forwarded")
        return sum(int(line) for line in log.read_text().split()) if log.exists() else 0

    full = finish(child(work / "cache-full"))
    cache = work / "cache-killed"
    start = time.perf_counter()
    process = child(cache)
    # Half the images done and half of the next shard: a shard is in progress when the kill comes.
    while process.poll() is None and forwarded(cache) < args.images // 2 + args.shard_size // 2:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = time.perf_counter() - start
    written = len(list(cache.glob("features/*.partial/shard-*.npz")))
    before_kill = forwarded(cache)
    resumed = finish(child(cache))
    return {"shards": n_shards, "written": written, "full": full, "killed_after": killed_after, "resumed": resumed,
            "forwarded_before_kill": before_kill, "forwarded_total": forwarded(cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="JPEGs for parts 1 and 3.")
    parser.add_argument("--real-images", type=int, default=64, help="Images for parts 2 and 4 (slow on a CPU).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="Input workers (default: one per core).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="Keep the generated JPEGs and models here between runs.")
    parser.add_argument("--skip-real", action="store_true", help="Skip parts 2 and 4.")
    parser.add_argument("--parts", default="1,2,3,4,5", help="Which parts to run (comma-separated).")
    parser.add_argument("--instant-images", type=int, default=4096, help="Images for part 5 (instant models).")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-extract-"))
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    dataset = jpeg_dataset(root / f"jpegs-{max(args.images, args.real_images)}", max(args.images, args.real_images))
    clip, vit = tiny_repos(root)
    print(f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, cuda: {torch.cuda.is_available()}, "
          f"device: {args.device}, precision: {args.precision}, workers: {args.num_workers or 'default'}")

    parts = {int(p) for p in args.parts.split(",")}
    if args.skip_real:
        parts -= {2, 4}
    if 1 in parts:
        part_one(args, work, dataset, clip, vit)
    if parts & {2, 4}:
        part_two_and_four(args, work, dataset, parts)
    if 3 in parts:
        part_three(args, work, dataset, clip, vit)
    if 5 in parts:
        part_five(args, work, root)


def part_one(args, work, dataset, clip, vit) -> None:
    pipeline = input_pipeline(args, work, dataset, clip, vit)
    rates, cpu_ms = pipeline["rates"], pipeline["cpu_ms"]
    print(f"\n1. Input pipeline, {pipeline['images']} JPEGs 500x375, tiny 224 px models ({pipeline['runtime']})")
    print(f"   {'':58} {'img/s':>8} {'CPU ms/img':>11} {'speed-up':>9}")
    labels = {"old": "single-threaded loop (datasets decode + both HF processors)",
              "engine, 0 workers": "engine, 0 workers (fast plans, main process only)",
              "engine": f"engine, {pipeline['runtime']['num_workers']} workers"}
    for name in ("old", "engine, 0 workers", "engine"):
        print(f"   {labels[name]:58} {rates[name]:8.1f} {cpu_ms[name]:11.2f} {rates[name] / rates['old']:8.2f}x")


def part_two_and_four(args, work, dataset, parts) -> None:
    real = real_shaped(args, work, dataset)
    if 2 in parts:
        forward = statistics.mean(real["forward"])
        print(f"\n2. Real-shaped models (CLIP ViT-B/32 + ViT-B/16), {real['images']} images ({real['runtime']})")
        print(f"   forward only, preprocessed tensors   {forward:8.2f} img/s (before {real['forward'][0]:.2f}, "
              f"after {real['forward'][1]:.2f})")
        print(f"   end-to-end extraction                {real['end_to_end']:8.2f} img/s")
        print(f"   end-to-end / forward                 {real['end_to_end'] / forward:8.2f}x")
        print(
            f"   CPU seconds per image: forward only {real['forward_cpu_s_per_img']:.3f}, end-to-end "
            f"{real['end_to_end_cpu_s_per_img']:.3f} "
            f"(ratio {real['forward_cpu_s_per_img'] / real['end_to_end_cpu_s_per_img']:.2f}x)"
        )

    if 4 in parts:
        print(f"\n4. Adding {len(NEW_CONCEPTS)} concepts to {real['images']} images")
        print(f"   from kept region embeddings    {real['with_concepts_s']:8.3f} s (best of 3)")
        print(f"   re-extracting                  {real['reextract_s']:8.3f} s")
        print(f"   speed-up                       {real['reextract_s'] / real['with_concepts_s']:8.0f}x")


def part_three(args, work, dataset, clip, vit) -> None:
    cut = interruption(args, work, dataset, clip, vit)
    full, resumed = cut["full"], cut["resumed"]
    one_shard = full["extract"] / cut["shards"]
    lost = cut["killed_after"] + resumed["startup"] + resumed["extract"] - full["startup"] - full["extract"]
    lost_images = cut["forwarded_total"] - args.images
    print(
        f"\n3. Interruption at 50% ({args.images} images, {cut['shards']} shards of {args.shard_size}; "
        f"SIGKILL once half the images and half a shard more are forwarded)"
    )
    print(f"   killed with {cut['written']} shards written and {cut['forwarded_before_kill']} images forwarded; the "
          f"resumed run forwarded {cut['forwarded_total'] - cut['forwarded_before_kill']}")
    print(f"   work lost: {lost_images} images = {lost_images / args.shard_size:.2f} shard(s) (target: at most 1)")
    print(f"   wall clock: uninterrupted {full['startup']:.2f} s start-up + {full['extract']:.2f} s extraction; killed "
          f"after {cut['killed_after']:.2f} s, resumed {resumed['startup']:.2f} s + {resumed['extract']:.2f} s")
    print(f"   time lost {lost:.2f} s = {lost / one_shard:.2f} shard-times of {one_shard:.2f} s, of which "
          f"{resumed['startup']:.2f} s restarting the process (wall clock: sensitive to other load on the machine)")


def part_five(args, work, root) -> None:
    rows = instant_engine(args, work, root)
    print(f"\n5. The engine alone: instant models ({INSTANT_CLASSES} logits, {INSTANT_REGIONS} x {INSTANT_DIM} "
          "regions), "
          f"{rows[0]['images']} JPEGs 224 x 224, {args.num_workers or 'default'} workers, batch {args.batch_size}, "
          f"shards of {ExtractConfig().shard_size}; the main process's CPU ms per image")
    print(f"   {'kept regions':>12} {'img/s':>8} {'device share':>13} {'main loop':>10} {'writer':>7} {'assembly':>9} "
          f"{'own work':>9} {'ceiling img/s':>14}")
    for row in rows:
        loop_own = row["loop_ms"] - row["device_ms"]  # the device's share runs inside the loop
        own = loop_own + row["writer_ms"] + row["assemble_ms"]
        print(f"   {'on' if row['keep_regions'] else 'off':>12} {row['rate']:8.0f} {row['device_ms']:13.3f} "
              f"{loop_own:10.3f} {row['writer_ms']:7.3f} {row['assemble_ms']:9.3f} {own:9.3f} "
              f"{1000 / loop_own:14.0f}")
    print("   own work = main loop (less the device's share) + shard writer thread + assembly; target: under 0.2 ms "
          "with kept regions. Ceiling: the main loop's own work alone, one image after another.")


if __name__ == "__main__":
    main()
