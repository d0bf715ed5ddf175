"""The extraction engine: fast image plans, pipelined input, precision, shards and resume, several
processes, kept regions, unreadable images and the errors a user can act on."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoProcessor,
    BitImageProcessor,
    CLIPImageProcessor,
    ConvNextImageProcessor,
    DeiTImageProcessor,
    EfficientNetImageProcessor,
    SiglipImageProcessor,
    ViTImageProcessor,
)

import infincond
from infincond import (
    ConceptEncoder,
    DataConfig,
    ExtractConfig,
    FeatureSet,
    ImageSource,
    Teacher,
    extract_features,
)
from infincond.cli import main
from infincond.errors import ConfigError, ExtractionError, StorageError
from infincond.extract import loader as loader_module
from infincond.extract.loader import decode_image
from infincond.extract.preprocess import image_plan
from infincond.extract.runtime import resolve_device, resolve_precision
from infincond.extraction import fingerprint
from infincond.testing import photo_jpeg

from .conftest import CONCEPTS, _free_port

#: The fast path against each processor, in grey levels of the uint8 image before rescaling: bilinear and
#: bicubic resizes run in torch (antialiased uint8 kernels) where the processors run PIL, within 2 levels on
#: noise (1 on photographs), 0.1 level on average; nearest-neighbour resizes and crops are PIL's own.
MAX_LEVELS, MEAN_LEVELS = 2.0, 0.1
WORKTREE = Path(infincond.__file__).resolve().parents[1]
ARRAYS = ("concept_scores", "best_region", "teacher_logits", "image_ids", "labels", "is_val", "region_embeddings")

PROCESSORS = {
    "clip": CLIPImageProcessor(),
    "clip-32": CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
    "clip-no-rescale": CLIPImageProcessor(do_rescale=False),
    "vit": ViTImageProcessor(),
    "vit-no-normalise": ViTImageProcessor(do_normalize=False),
    "siglip": SiglipImageProcessor(),
    "convnext-224": ConvNextImageProcessor(size={"shortest_edge": 224}),  # resize to 256 (crop_pct), crop 224
    "convnext-384": ConvNextImageProcessor(),  # warp, no crop
    "convnext-world": ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0),
    "bit": BitImageProcessor(),
    "efficientnet": EfficientNetImageProcessor(),
    "efficientnet-offset-crop": EfficientNetImageProcessor(rescale_offset=True, include_top=False, do_center_crop=True),
    "efficientnet-world": EfficientNetImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False),
}


def assert_matches_processor(plan, images, expected: torch.Tensor) -> None:
    """The plan's pixel values against the processor's, measured in grey levels (see MAX_LEVELS)."""
    got = plan(images)
    assert got.shape == expected.shape and got.dtype == torch.float32
    levels = ((got - expected) / torch.tensor(plan.scale).view(1, 3, 1, 1)).abs()
    assert (float(levels.max()) <= MAX_LEVELS + 1e-3
            and float(levels.mean()) <= MEAN_LEVELS), (levels.max(), levels.mean())


def _images(seed: int = 0) -> list[Image.Image]:
    """Landscape, portrait, square, and smaller than every crop (padded)."""
    rng = np.random.default_rng(seed)
    sizes = [(375, 500), (500, 375), (64, 64), (20, 30), (33, 97)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _assert_same_features(got: FeatureSet, expected: FeatureSet) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(expected, name)), err_msg=name)
    assert got.concepts == expected.concepts and got.fingerprint == expected.fingerprint


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKTREE), os.environ.get("PYTHONPATH", "")])}


# -- fast image plans ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PROCESSORS))
def test_fast_path_matches_the_image_processor(name):
    processor = PROCESSORS[name]
    plan = image_plan(processor)
    assert plan.fast
    for image in _images():
        assert_matches_processor(plan, [image], processor(images=[image], return_tensors="pt")["pixel_values"])


def test_fast_path_matches_the_shapes_world_processors(tmp_path):
    """The Shapes world's ALIGN encoder (EfficientNet processor) and ResNet teacher (ConvNeXT processor), built
    by the world's own code, saved and loaded back, on the world's scenes."""
    from infincond.demo.biased_teacher import TeacherTrainConfig, build_teacher
    from infincond.demo.dual_encoder import EncoderTrainConfig, build_dual_encoder
    from infincond.demo.scenes import SceneConfig, random_scenes, render_many

    config = SceneConfig()
    images = render_many(random_scenes(6, config, seed=0), config.image_size)[0] + _images()
    built = {"encoder": build_dual_encoder(config.image_size, EncoderTrainConfig(), 0)[1],
             "teacher": build_teacher(config.image_size, TeacherTrainConfig(), 0)[1]}
    for name, processor in built.items():
        processor.save_pretrained(tmp_path / name)
        loaded = AutoProcessor.from_pretrained(tmp_path / name)
        loaded = getattr(loaded, "image_processor", loaded)
        assert type(loaded).__name__.startswith(("EfficientNetImageProcessor", "ConvNextImageProcessor"))
        plan = image_plan(loaded)
        assert plan.fast
        assert_matches_processor(plan, images[:6], loaded(images=images[:6], return_tensors="pt")["pixel_values"])
        for image in images[6:]:
            assert_matches_processor(plan, [image], loaded(images=[image], return_tensors="pt")["pixel_values"])


def test_an_unknown_processor_runs_itself():
    processor = DeiTImageProcessor()  # not one the fast path replicates
    plan = image_plan(processor)
    assert not plan.fast and plan.identity()["processor"] == "DeiTImageProcessor"
    image = _images()[0]
    torch.testing.assert_close(plan([image]), processor(images=[image], return_tensors="pt")["pixel_values"],
                               atol=0, rtol=0)


def test_image_methods_share_the_forward_from_pixels(teacher, encoder, source):
    images = source.images([0, 1, 2])
    teacher_pixels = teacher.processor(images=images, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(teacher.logits(images), teacher.logits_from_pixels(teacher_pixels).numpy(), atol=1e-5)
    encoder_pixels = encoder.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(encoder.encode_regions(images).embeddings,
                               encoder.regions_from_pixels(encoder_pixels).embeddings, atol=1e-5, rtol=1e-5)


def test_draft_decoding_stays_close_on_real_jpegs(encoder, corpus):
    """Draft mode (off by default) on 500 x 375 JPEGs for a 32 px model (1/8 DCT scale): pixels within a
    mean of 1 grey level and a max of 24; concept scores within 0.02."""
    rng = np.random.default_rng(1)
    plan, text = encoder.image_plan, encoder.encode_text(corpus.prompts())
    full, drafted = [], []
    for _ in range(12):
        data = photo_jpeg(rng)
        image, original, box = decode_image(data)
        assert box is None and original == (500, 375)
        full.append(plan.pixels(image, original))
        small, original, box = decode_image(data, plan.needed_size)
        assert small.size == (63, 47) and box is not None
        drafted.append(plan.pixels(small, original, box))
    full, drafted = torch.from_numpy(np.stack(full)), torch.from_numpy(np.stack(drafted))
    levels = (full.int() - drafted.int()).abs().float()
    assert levels.mean() <= 1.0 and levels.max() <= 24
    scores = [infincond.concept_presence(encoder.regions_from_pixels(plan.normalise(x)).embeddings, text)[0]
              for x in (full, drafted)]
    assert 0 < (scores[0] - scores[1]).abs().max() <= 0.02


# -- runs: workers, precision, cache ------------------------------------------------------------------------
def test_workers_give_the_same_features(source, teacher, encoder, corpus, features):
    with_workers = extract_features(source, teacher, encoder, corpus, ExtractConfig(num_workers=2, batch_size=32),
                                    cache_dir=False, progress=False)
    _assert_same_features(with_workers, features)
    assert with_workers.provenance["runtime"]["num_workers"] == 2 and features.region_embeddings is not None


def test_a_short_run_decodes_in_the_main_process_by_default(source, teacher, encoder, corpus, features):
    from infincond.extract.runtime import SMALL_RUN_BATCHES, default_num_workers

    short = ExtractConfig(batch_size=-(-len(source) // (SMALL_RUN_BATCHES - 1)))  # one batch too few for workers
    got = extract_features(source, teacher, encoder, corpus, short, cache_dir=False, progress=False)
    assert got.provenance["runtime"]["num_workers"] == 0
    _assert_same_features(got, features)
    longer = extract_features(source, teacher, encoder, corpus, ExtractConfig(batch_size=5), cache_dir=False,
                              progress=False)  # 20 batches: a worker per core, at most one per two batches
    assert longer.provenance["runtime"]["num_workers"] == min(default_num_workers(), 10) >= 1


def test_grid_regions_and_a_processor_that_runs_itself_through_the_engine(repos, source, teacher, corpus):
    """Grid crops are views prepared in the workers; an unknown processor runs in the workers."""
    grid = ConceptEncoder.from_pretrained(repos["clip"], region_mode="grid", grid_size=2, device="cpu")
    processor = DeiTImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32})
    deit = Teacher(teacher.model, processor, "deit-processor-teacher", "none", teacher.class_names)
    assert not deit.image_plan.fast
    got = extract_features(source, deit, grid, corpus, ExtractConfig(num_workers=2, region_mode="grid"),
                           cache_dir=False, progress=False)
    images = source.images([3, 4, 5])
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(got.teacher_logits[3:6], deit.logits_from_pixels(pixels).numpy(), atol=1e-5)
    regions = grid.encode_regions(images).embeddings
    assert regions.shape[1] == 5 and got.region_embeddings.shape[1:] == (5, grid.embed_dim)
    np.testing.assert_allclose(got.region_embeddings[3:6], regions.half().numpy(), atol=1e-3)
    expected = infincond.concept_presence(regions.half(), grid.encode_text(corpus.prompts()))[0].numpy()
    np.testing.assert_allclose(got.concept_scores[3:6], expected, atol=1e-5)


def test_reduced_precision_agrees_with_fp32(source, teacher, encoder, corpus, features):
    """bf16 autocast: concept scores within 0.02 of fp32 (mean 0.005), teacher logits within 0.02."""
    bf16 = extract_features(source, teacher, encoder, corpus, ExtractConfig(precision="bf16", num_workers=0),
                            cache_dir=False, progress=False)
    assert bf16.provenance["runtime"]["precision"] == "bf16" and bf16.fingerprint != features.fingerprint
    difference = np.abs(bf16.concept_scores - features.concept_scores)
    assert 0 < difference.max() <= 0.02 and difference.mean() <= 0.005
    np.testing.assert_allclose(bf16.teacher_logits, features.teacher_logits, atol=0.02)


def test_device_and_precision_resolve():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == resolve_device(None).type == expected
    with pytest.raises(ConfigError, match="Unknown device"):
        resolve_device("abacus")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("int8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="shard_size"):
        ExtractConfig(shard_size=0).check()


def test_fingerprint_covers_precision_and_preprocessing_only(source, teacher, encoder, corpus):
    key = fingerprint(encoder, teacher, source, corpus, ExtractConfig())
    same = [ExtractConfig(num_workers=0, batch_size=7, shard_size=3, device="cpu", precision="fp32")]
    assert all(fingerprint(encoder, teacher, source, corpus, c) == key for c in same)
    other = [ExtractConfig(precision="bf16"), ExtractConfig(draft=True), ExtractConfig(keep_regions=False)]
    assert len({key, *(fingerprint(encoder, teacher, source, corpus, c) for c in other)}) == 4


def test_large_arrays_are_memory_mapped_read_only(features):
    assert features.folder is not None and (features.folder / "concept_scores.npy").exists()
    for name in ("concept_scores", "best_region", "teacher_logits", "region_embeddings"):
        array = getattr(features, name)
        assert isinstance(array, np.memmap) and not array.flags.writeable
    assert not isinstance(features.labels, np.memmap) and features.region_embeddings.dtype == np.float16
    in_memory = FeatureSet.load(features.folder, mmap=False)
    assert not isinstance(in_memory.concept_scores, np.memmap)
    np.testing.assert_array_equal(in_memory.concept_scores, features.concept_scores)


# -- kept regions ---------------------------------------------------------------------------------------------
def test_with_concepts_equals_a_full_extraction(source, teacher, encoder, corpus, features):
    added = ["striped", "yellow", "red"]  # "red" is already there: skipped
    grown = features.with_concepts(added, encoder)
    assert grown.concepts == [*features.concepts, "striped", "yellow"]
    full = extract_features(source, teacher, encoder, corpus + ["striped", "yellow"], cache_dir=False, progress=False)
    assert full.concepts == grown.concepts
    np.testing.assert_allclose(grown.concept_scores, full.concept_scores, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(grown.best_region, full.best_region)
    np.testing.assert_allclose(grown.concept_embeddings, full.concept_embeddings, atol=1e-6)
    step = grown.provenance["with_concepts"][-1]
    assert step["base_fingerprint"] == features.fingerprint and step["added"] == ["striped", "yellow"]
    assert grown.fingerprint not in (features.fingerprint, full.fingerprint)


def test_with_concepts_needs_kept_regions(source, teacher, encoder, corpus):
    without = extract_features(source, teacher, encoder, corpus, ExtractConfig(keep_regions=False), cache_dir=False,
                               progress=False)
    assert without.region_embeddings is None
    with pytest.raises(ConfigError, match="keep_regions=True"):
        without.with_concepts(["striped"], encoder)


# -- unreadable images and errors ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def damaged_source(tmp_path_factory):
    """Twelve JPEG rows, of which row 3 is not an image and row 8 a truncated JPEG."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(2)
    rows = [{"bytes": photo_jpeg(rng, 64, 48), "path": None} for _ in range(12)]
    rows[3] = {"bytes": b"this is not an image", "path": None}
    rows[8] = {"bytes": rows[8]["bytes"][:200], "path": None}
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["red", "green", "blue"])})
    folder = tmp_path_factory.mktemp("damaged") / "data"
    Dataset.from_dict({"image": rows, "label": [i % 3 for i in range(12)]}, features=features).save_to_disk(str(folder))
    return ImageSource.load(DataConfig(str(folder), samples=None))


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_are_skipped_and_reported(damaged_source, teacher, encoder, corpus, workers, tmp_path):
    config = ExtractConfig(num_workers=workers, batch_size=4, shard_size=5)
    with pytest.warns(UserWarning, match="2 image"):
        got = extract_features(damaged_source, teacher, encoder, corpus, config, cache_dir=tmp_path, progress=False)
    assert got.image_ids.tolist() == [0, 1, 2, 4, 5, 6, 7, 9, 10, 11]
    assert len(got.concept_scores) == len(got.teacher_logits) == len(got.is_val) == 10
    failed = got.provenance["failed_images"]
    assert [f["image_id"] for f in failed] == [3, 8] and got.provenance["n_failed"] == 2
    assert "UnidentifiedImageError" in failed[0]["error"] and failed[1]["error"]
    decoded = [i for i in range(12) if i not in (3, 8)]
    expected = teacher.logits(damaged_source.images(decoded))
    np.testing.assert_allclose(got.teacher_logits, expected, atol=1e-5)


def test_a_dead_worker_is_a_clear_error(source, teacher, encoder, corpus, monkeypatch):
    def die_in_a_worker(*args, **kwargs):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode_image(*args, **kwargs)

    monkeypatch.setattr(loader_module, "decode_image", die_in_a_worker)
    with pytest.raises(ExtractionError, match="num_workers=0"):
        extract_features(source, teacher, encoder, corpus, ExtractConfig(num_workers=2), cache_dir=False,
                         progress=False)


def test_out_of_memory_suggests_a_smaller_batch(source, teacher, encoder, corpus, monkeypatch):
    def out_of_memory(pixel_values):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(teacher, "logits_from_pixels", out_of_memory)
    with pytest.raises(ExtractionError, match="batch_size=16"):
        extract_features(source, teacher, encoder, corpus, ExtractConfig(num_workers=0), cache_dir=False,
                         progress=False)


# -- shards: resume after a kill, several processes ----------------------------------------------------------
RUN_SCRIPT = """
import sys, time
from infincond import ConceptCorpus, ConceptEncoder, DataConfig, ExtractConfig, ImageSource, Teacher, extract_features
dataset, teacher_path, clip, cache, pause = sys.argv[1:6]
source = ImageSource.load(DataConfig(dataset, samples=100, seed=0))
teacher = Teacher.from_pretrained(teacher_path, dataset_label_names=source.label_names, device="cpu")
encoder = ConceptEncoder.from_pretrained(clip, device="cpu")
forward = teacher.logits_from_pixels
teacher.logits_from_pixels = lambda pixels: (time.sleep(float(pause)), forward(pixels))[1]
corpus = ConceptCorpus.from_list(sys.argv[6].split(","))
extract_features(source, teacher, encoder, corpus, ExtractConfig(num_workers=0, batch_size=5, shard_size=10),
                 cache_dir=cache, progress=False)
"""


def test_a_run_killed_mid_way_resumes_to_the_same_features(repos, source, teacher, encoder, corpus, tmp_path,
                                                            monkeypatch):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    cache = tmp_path / "cache"
    args = [sys.executable, str(script), repos["dataset"], repos["teacher"], repos["clip"], str(cache), "0.1",
            ",".join(CONCEPTS)]
    process = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list((cache / "features").glob("*.partial/shard-*.npz")) if (cache / "features").exists() else []
        if len(found) >= 3:
            partial = found[0].parent
            break
        time.sleep(0.05)
    assert partial is not None, process.stderr.read().decode() if process.poll() is not None else "no shards written"
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(partial.glob("shard-*.npz")))
    assert 3 <= written < 10 and not (partial.with_name(partial.name[: -len(".partial")]) / "meta.json").exists()

    config = ExtractConfig(num_workers=0, batch_size=5, shard_size=10)
    batches = []
    forward = teacher.logits_from_pixels
    monkeypatch.setattr(teacher, "logits_from_pixels", lambda pixels: batches.append(len(pixels)) or forward(pixels))
    resumed = extract_features(source, teacher, encoder, corpus, config, cache_dir=cache, progress=False)
    assert sum(batches) == 100 - 10 * written  # only the missing shards ran
    monkeypatch.undo()
    uninterrupted = extract_features(source, teacher, encoder, corpus, config, cache_dir=False, progress=False)
    _assert_same_features(resumed, uninterrupted)
    assert not partial.exists() and resumed.folder == partial.with_name(resumed.fingerprint)


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A real file system of ``size`` (tmpfs) mounted on ``folder`` (root on Linux, as CI runs)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    with _small_disk(tmp_path / "small-disk", "1m") as folder:
        yield folder


def test_a_disk_too_small_for_the_features_is_refused_before_the_image_pass(source, teacher, encoder, corpus,
                                                                             tmp_path, monkeypatch):
    monkeypatch.setattr(teacher, "logits_from_pixels", lambda pixels: 1 / 0)  # no image pass may start
    config = ExtractConfig(num_workers=0, batch_size=5, shard_size=10, keep_regions=True)
    refused = r"need [0-9.]+ MB more in .* MB free: free some space, or choose a cache"
    with _small_disk(tmp_path / "tiny-disk", "64k") as disk, pytest.raises(StorageError, match=refused):
        extract_features(source, teacher, encoder, corpus, config, cache_dir=disk, progress=False)


def _fill(path: Path, keep: int = 0) -> None:
    """Write ``path`` until the disk it is on has at most ``keep`` bytes free (a real ENOSPC ends it)."""
    chunk = b"\0" * 4096
    with open(path, "ab") as handle:
        try:
            while shutil.disk_usage(path.parent).free > keep:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass


def test_a_full_disk_stops_the_run_with_what_happened_and_keeps_the_complete_shards(
        source, teacher, encoder, corpus, small_disk, monkeypatch):
    config = ExtractConfig(num_workers=0, batch_size=5, shard_size=10)
    cache = small_disk / "cache"
    forward, seen = teacher.logits_from_pixels, []

    def fill_the_disk_after_two_shards(pixels):
        seen.append(len(pixels))
        if sum(seen) == 30:  # two shards of 10 are complete or being written: the disk fills up now
            _fill(small_disk / "ballast")
        return forward(pixels)

    monkeypatch.setattr(teacher, "logits_from_pixels", fill_the_disk_after_two_shards)
    with pytest.raises(StorageError, match=r"The extraction stopped: .*the disk is full.* complete shard\(s\) of 10 "
                                           r"are kept .*run again to resume after them"):
        extract_features(source, teacher, encoder, corpus, config, cache_dir=cache, progress=False)
    partial = next((cache / "features").glob("*.partial"))
    written = len(list(partial.glob("shard-*.npz")))
    assert 1 <= written <= 3 and sum(seen) < 100  # stopped at the failure, not at the end

    monkeypatch.undo()
    (small_disk / "ballast").unlink()
    batches = []
    monkeypatch.setattr(teacher, "logits_from_pixels", lambda pixels: batches.append(len(pixels)) or forward(pixels))
    resumed = extract_features(source, teacher, encoder, corpus, config, cache_dir=cache, progress=False)
    assert sum(batches) == 100 - 10 * written  # the complete shards were kept and not computed again
    monkeypatch.undo()
    _assert_same_features(resumed, extract_features(source, teacher, encoder, corpus, config, cache_dir=False,
                                                    progress=False))


def test_two_processes_give_the_features_of_one(repos, tmp_path):
    """``torch.distributed.run`` with 2 CPU processes running the CLI (what ``accelerate launch -m infincond
    extract`` starts), against one process: shards split i % 2, the main process assembles."""
    corpus_file = tmp_path / "concepts.txt"
    corpus_file.write_text("\n".join(CONCEPTS))
    options = ["extract", "--teacher", repos["teacher"], "--dataset", repos["dataset"], "--encoder", repos["clip"],
               "--corpus", str(corpus_file), "--samples", "100", "--num-workers", "0", "--shard-size", "10"]
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "infincond",
        *options,
        "--cache-dir",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(launch, env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Features written to") == 1  # the main process reports
    folder = Path(done.stdout.split("Features written to ")[1].split()[0])
    two = FeatureSet.load(folder)
    assert two.provenance["runtime"]["processes"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the launched processes ran one thread each
    try:
        assert main([*options, "--cache-dir", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    one = FeatureSet.load(next((tmp_path / "one" / "features").glob("*/meta.json")).parent)
    _assert_same_features(two, one)
    assert one.provenance["runtime"]["processes"] == 1


# -- the CLI ---------------------------------------------------------------------------------------------------
def test_cli_extract_then_distill_reuses_the_features(repos, tmp_path, capsys, monkeypatch):
    options = ["--teacher", repos["teacher"], "--dataset", repos["dataset"], "--encoder", repos["clip"],
               "--extra-concepts", "red,green,blue,circle", "--samples", "60", "--cache-dir", str(tmp_path / "cache"),
               "--num-workers", "0"]
    assert main(["extract", *options, "--batch-size", "16"]) == 0
    printed = capsys.readouterr().out
    folder = Path(printed.split("Features written to ")[1].split()[0])
    assert json.loads((folder / "meta.json").read_text())["provenance"]["runtime"]["batch_size"] == 16
    assert "60 images" in printed

    def no_image_pass(*args, **kwargs):
        raise AssertionError("distill ran an image pass after extract")

    monkeypatch.setattr(ConceptEncoder, "regions_from_pixels", no_image_pass)
    monkeypatch.setattr(Teacher, "logits_from_pixels", no_image_pass)
    assert main(["distill", *options, "--nec", "3", "--out", str(tmp_path / "student")]) == 0
    assert (tmp_path / "student" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "features").iterdir()) == [folder.name]
