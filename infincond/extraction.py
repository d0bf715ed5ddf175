"""The extraction run: shards of the sample split between processes, each shard's batches streamed through
the input workers into both models (autocast at the run's precision), presence computed on the device,
each shard written as soon as it is complete; then the main process assembles the FeatureSet.
:func:`extract_features` is the entry point: the features' cache key (:func:`fingerprint`), a cached
FeatureSet reused, else this run. It sits above :mod:`infincond.features`; the parts of the image pass it
runs (:mod:`infincond.extract`: image plans, loader, runtime, shards) below it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .concepts.corpus import ConceptCorpus, near_duplicate_mask
from .concepts.encoder import ConceptEncoder
from .concepts.presence import concept_presence, stored_regions
from .data import ImageSource
from .errors import ConfigError, ExtractionError, StorageError
from .extract.loader import ImageBatches, ModelInput, batch_pixels, make_loader
from .extract.preprocess import PREPROCESS_VERSION
from .extract.runtime import Processes, autocast, processes, resolve_precision, workers_for
from .extract.shards import ShardStore
from .features import FORMAT_VERSION, ExtractConfig, FeatureSet, default_cache_dir
from .storage import fsync_folder
from .teacher import Teacher

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
#: Batches whose results may wait for the writer thread (their rows held in memory meanwhile).
WRITE_AHEAD = 4


def _columns(meta: FeatureSet, keep_regions: bool) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Per-image result arrays: dtype and shape of one row."""
    k, c = len(meta.concepts), len(meta.class_names)
    columns = {"concept_scores": (np.dtype(np.float32), (k,)), "best_region": (np.dtype(np.int16), (k,)),
               "teacher_logits": (np.dtype(np.float32), (c,))}
    if keep_regions:
        columns["region_embeddings"] = (np.dtype(np.float16),
                                        (len(meta.region_boxes), meta.concept_embeddings.shape[1]))
    return columns


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """The loader's batches; a dead input worker becomes an ExtractionError that says what to try."""
    try:
        yield from loader
    except RuntimeError as error:
        if "DataLoader worker" not in str(error):
            raise
        raise ExtractionError(
            f"An input worker stopped unexpectedly ({error}). Run again with num_workers=0 (CLI: --num-workers 0) "
            "to decode in the main process and see the underlying error, or use fewer workers if the machine ran "
            "out of memory. Shards already written are kept: the next run resumes after them.") from error


def _forward(item: dict, teacher: Teacher, encoder: ConceptEncoder, concept_embeddings: torch.Tensor,
             device: torch.device, precision: str, keep_regions: bool) -> tuple[dict[str, torch.Tensor], object]:
    """Launch one batch: teacher logits, presence and best region, regions (fp16). Returns the results as CPU
    tensors being copied from the device without waiting (pinned memory), and an event that marks the copy
    done (None off CUDA): the next batch is launched while this one finishes."""
    teacher_pixels, encoder_pixels = batch_pixels({**item, "pixels": item["pixels"].to(device, non_blocking=True)})
    try:
        with autocast(device, precision):
            logits = teacher.logits_from_pixels(teacher.image_plan.normalise(teacher_pixels))
            regions = encoder.regions_from_pixels(encoder.image_plan.normalise(encoder_pixels)).embeddings
    except _OOM as error:
        size = len(item["positions"])
        raise ExtractionError(
            f"Out of memory on {device} with a batch of {size} images: use a smaller batch size "
            f"(batch_size={max(1, size // 2)}, CLI: --batch-size {max(1, size // 2)}). Shards already written "
            "are kept: the next run resumes after them.") from error
    regions = stored_regions(regions)
    scores, best = concept_presence(regions, concept_embeddings)
    results = {"concept_scores": scores, "best_region": best.to(torch.int16), "teacher_logits": logits.float()}
    if keep_regions:
        results["region_embeddings"] = regions
    if device.type != "cuda":
        return {name: value.cpu() for name, value in results.items()}, None
    copies = {}
    for name, value in results.items():
        copies[name] = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
        copies[name].copy_(value, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return copies, event


def _collect(item: dict, launched: tuple[dict[str, torch.Tensor], object]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One launched batch's positions and result arrays, once its copies are done."""
    copies, event = launched
    if event is not None:
        event.synchronize()
    return item["positions"], {name: value.numpy() for name, value in copies.items()}


def _compute(store: ShardStore, todo: list[int], source: ImageSource, teacher: Teacher, encoder: ConceptEncoder,
             meta: FeatureSet, config: ExtractConfig, run: dict, keep_regions: bool, bar: tqdm) -> None:
    """Compute and write the shards ``todo``, streaming their batches through the input workers."""
    ranges = store.ranges()
    batches, owner = [], []
    for shard in todo:
        start, stop = ranges[shard]
        for begin in range(start, stop, config.batch_size):
            batches.append(np.arange(begin, min(begin + config.batch_size, stop)))
            owner.append(shard)
    if not batches:
        return
    device = run["device"]
    inputs = [ModelInput(teacher.image_plan),
              ModelInput(encoder.image_plan, encoder.view_grid)]
    dataset = ImageBatches(source, batches, inputs, draft=config.draft)
    loader = make_loader(dataset, run["num_workers"], pin_memory=device.type == "cuda")
    concept_embeddings = torch.from_numpy(np.asarray(meta.concept_embeddings)).to(device)
    left, kept, failed = Counter(owner), defaultdict(list), defaultdict(list)
    # Each batch's rows are written to their place by one background thread while the next batches run (at
    # most WRITE_AHEAD batches behind); a shard is sealed once all its rows are written. Batch i + 1 is
    # launched on the device before batch i's results are collected, so the device never waits for the host.
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
        pending: deque[Future] = deque()
        previous = None

        def finish(item: dict, launched) -> None:
            shard = owner[item["index"]]
            if launched is not None:
                positions, arrays = _collect(item, launched)
                kept[shard].append(positions)
                pending.append(writer.submit(store.write_rows, positions, arrays))
            failed[shard] += item["failed"]
            left[shard] -= 1
            if left[shard] == 0:
                positions = np.concatenate(kept.pop(shard, [np.zeros(0, dtype=np.int64)]))
                pending.append(writer.submit(store.seal, shard, positions, failed.pop(shard, [])))
            while len(pending) > WRITE_AHEAD or (pending and pending[0].done()):
                pending.popleft().result()  # re-raises a failed write here
            bar.update(len(item["positions"]) + len(item["failed"]))

        try:
            for item in _batches(loader):
                launched = (_forward(item, teacher, encoder, concept_embeddings, device, run["precision"],
                                     keep_regions) if len(item["positions"]) else None)
                if previous is not None:
                    finish(*previous)
                previous = (item, launched)
            if previous is not None:
                finish(*previous)
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:  # nothing more is written after a failure
                future.cancel()
            raise


def _assemble(store: ShardStore, meta: FeatureSet, final: Path, run: dict) -> None:
    """Assemble the shards into the FeatureSet folder ``final`` (written beside it, then renamed)."""
    building = final.with_name(f"{final.name}.assembling")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    positions = store.assemble(building)
    failures = [{"image_id": int(meta.image_ids[p]), "position": int(p), "error": e} for p, e in store.failures()]
    if failures:
        shown = "; ".join(f"row {f['image_id']}: {f['error']}" for f in failures[:3])
        warnings.warn(f"{len(failures)} image(s) could not be read and were left out of the features "
                      f"(provenance['failed_images'] lists them): {shown}", stacklevel=3)
    arrays = {name: np.load(building / f"{name}.npy", mmap_mode="r") for name in store.columns}
    features = replace(
        meta,
        **arrays,
        labels=meta.labels[positions],
        image_ids=meta.image_ids[positions],
        is_val=meta.is_val[positions],
        provenance={
            **meta.provenance,
            "runtime": {k: str(v) if k == "device" else v for k, v in run.items()},
            "failed_images": failures,
            "n_failed": len(failures),
        },
    )
    features.save(building)
    del arrays, features
    if (final / "meta.json").exists():  # another run finished the same features first
        shutil.rmtree(building)
    else:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(building, final)
        fsync_folder(final.parent)
    shutil.rmtree(store.folder, ignore_errors=True)


def _same_key_everywhere(procs: Processes, key: str) -> None:
    """Every process must extract the same thing (same inputs, hence the same fingerprint)."""
    if procs.count == 1:
        return
    from accelerate.utils import gather_object

    keys = set(gather_object([key]))
    if len(keys) != 1:
        raise ConfigError(f"The processes of this launch computed different feature fingerprints {sorted(keys)}: "
                          "give every process the same teacher, dataset, encoder, corpus and settings.")


def run_extraction(source: ImageSource, teacher: Teacher, encoder: ConceptEncoder, meta: FeatureSet,
                   config: ExtractConfig, *, root: Path | None, keep_regions: bool,
                   progress: bool = True) -> FeatureSet:
    """Extract the features described by ``meta`` (a FeatureSet with everything but the per-image results:
    its fingerprint, concepts and embeddings, sample ids, labels and split) into ``root/<fingerprint>``.

    Shards go to ``root/<fingerprint>.partial`` first; a run interrupted at any point and started again
    resumes after the last complete shard. Under ``accelerate launch`` shard i goes to process i % P and
    the main process assembles; every process returns the same FeatureSet. ``root=None``: a temporary
    folder, removed at the end (or on an error: nothing to resume from), the FeatureSet loaded into memory.
    """
    procs = processes(config.device)
    device = procs.device
    _same_key_everywhere(procs, meta.fingerprint)
    base = root if root is not None else Path(tempfile.gettempdir()) / "infincond-features"
    final, partial = base / meta.fingerprint, base / f"{meta.fingerprint}.partial"
    teacher.to(device)
    encoder.to(device)
    identity = {"fingerprint": meta.fingerprint, "n_images": len(source), "keep_regions": keep_regions}
    columns = _columns(meta, keep_regions)
    if procs.is_main:
        ShardStore.open(partial, identity, config.shard_size, columns, create=True)
    procs.wait()
    store = ShardStore.open(partial, identity, config.shard_size, columns, create=False)
    done, ranges = store.done(), store.ranges()
    todo = [i for i in range(len(ranges)) if i % procs.count == procs.index and i not in done]
    store.check_space([i for i in range(len(ranges)) if i not in done])
    n_batches = sum(-(-(ranges[i][1] - ranges[i][0]) // config.batch_size) for i in todo)
    workers = workers_for(n_batches, config.num_workers, procs.local_count)
    run = {"device": device, "precision": resolve_precision(config.precision, device), "processes": procs.count,
           "num_workers": workers, "batch_size": config.batch_size, "shard_size": store.shard_size,
           "preprocess": {"version": PREPROCESS_VERSION, "draft": config.draft,
                          "teacher": "fast" if teacher.image_plan.fast else "processor",
                          "encoder": "fast" if encoder.image_plan.fast else "processor"}}
    if done and procs.is_main and progress:
        print(f"Resuming: {len(done)} of {len(ranges)} shards already extracted in {partial}")
    n_todo = sum(ranges[i][1] - ranges[i][0] for i in todo)
    try:
        with tqdm(total=n_todo, desc="Extracting concepts", unit="img",
                  disable=not (progress and procs.is_main)) as bar:
            _compute(store, todo, source, teacher, encoder, meta, config, run, keep_regions, bar)
    except BaseException as error:
        store.close()
        if root is None:  # no cache asked for: nothing is kept to resume from
            shutil.rmtree(partial, ignore_errors=True)
        if not isinstance(error, StorageError):
            raise
        kept = "" if root is None else (f" The {len(store.done())} complete shard(s) of {len(ranges)} are kept in "
                                        f"{str(partial)!r}: run again to resume after them.")
        raise StorageError(f"The extraction stopped: {error}{kept}") from error
    store.close()
    procs.wait()
    if procs.is_main:
        _assemble(store, meta, final, run)
    procs.wait()
    features = FeatureSet.load(final, mmap=root is not None)
    if root is None:
        procs.wait()
        if procs.is_main:
            shutil.rmtree(final, ignore_errors=True)
    return features


def fingerprint(encoder: ConceptEncoder, teacher: Teacher, source: ImageSource, corpus: ConceptCorpus,
                config: ExtractConfig) -> str:
    """Hash of every input that changes the features: models and their revisions, dataset and sample,
    corpus, extraction settings, the precision they run at, how images are preprocessed (the fast plans'
    version and settings, draft decoding) and whether region embeddings are kept. Batch size, workers,
    device and shard size are left out: they do not change the result."""
    settings = config.to_dict()
    for name in ("batch_size", "num_workers", "device", "shard_size", "precision", "keep_regions"):
        settings.pop(name)
    key = {
        "version": FORMAT_VERSION,
        "encoder": [encoder.repo_id, encoder.revision, encoder.region_mode],
        "teacher": [teacher.repo_id, teacher.revision],
        "dataset": source.describe(),
        "corpus": corpus.fingerprint(),
        "settings": settings,
        "precision": config.resolved_precision(),
        "keep_regions": config.resolved_keep_regions(len(source), len(encoder.region_boxes), encoder.embed_dim),
        "preprocess": {"teacher": teacher.image_plan.identity(), "encoder": encoder.image_plan.identity()},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def extract_features(source: ImageSource, teacher: Teacher, encoder: ConceptEncoder, corpus: ConceptCorpus,
                     config: ExtractConfig | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> FeatureSet:
    """Run teacher and encoder over the sample; reuse the cached FeatureSet when the inputs are the same.

    The image pass is :func:`run_extraction`: pipelined input, shards written as they finish (an
    interrupted run resumes), several processes under ``accelerate launch``.
    ``cache_dir=None`` uses :func:`default_cache_dir`; pass ``cache_dir=False`` to disable caching.
    """
    config = config or ExtractConfig()
    key = fingerprint(encoder, teacher, source, corpus, config)
    root = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / "features"
    if root is not None and (root / key / "meta.json").exists():
        return FeatureSet.load(root / key)

    concept_embeddings = encoder.encode_text(corpus.prompts(config.template))
    if config.dedup_threshold is not None:
        keep = near_duplicate_mask(concept_embeddings.numpy(), config.dedup_threshold)
        corpus = corpus.select(np.nonzero(keep)[0])
        concept_embeddings = concept_embeddings[torch.from_numpy(keep)]
    meta = FeatureSet(  # everything but the per-image results, which the engine fills in
        concept_scores=np.zeros((0, len(corpus)), np.float32), best_region=np.zeros((0, len(corpus)), np.int16),
        region_boxes=encoder.region_boxes, teacher_logits=np.zeros((0, teacher.num_classes), np.float32),
        labels=source.labels if source.labels is not None else np.full(len(source), -1, dtype=np.int64),
        image_ids=source.image_ids, is_val=source.is_val,
        concept_embeddings=concept_embeddings.numpy().astype(np.float32),
        concepts=list(corpus.concepts), concept_sources=list(corpus.sources), class_names=list(teacher.class_names),
        dataset_label_names=source.label_names,
        provenance={
            "fingerprint": key,
            "encoder": {"repo_id": encoder.repo_id, "revision": encoder.revision, "region_mode": encoder.region_mode,
                        "grid_size": encoder.grid_size},
            "teacher": {"repo_id": teacher.repo_id, "revision": teacher.revision},
            "dataset": source.describe(),
            "extract": config.to_dict(),
            "merged_concepts": [list(pair) for pair in corpus.merged],
        },
    )
    keep_regions = config.resolved_keep_regions(len(source), len(encoder.region_boxes), encoder.embed_dim)
    return run_extraction(source, teacher, encoder, meta, config, root=root, keep_regions=keep_regions,
                          progress=progress)
