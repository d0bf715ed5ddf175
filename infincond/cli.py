"""Command line: ``infincond extract | distill | example | demo | push | space deploy`` (``infincond -h``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import InfinconError


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """The options ``extract`` and ``distill`` share: what to extract from and how (one cache key). Defaults
    are read from DataConfig and ExtractConfig."""
    from .data import DataConfig
    from .extract.runtime import PRECISIONS
    from .features import ExtractConfig

    p.add_argument("--teacher", required=True, help="Hub repo id or local folder of an image classifier.")
    p.add_argument("--dataset", required=True, help="Hub dataset id, image folder, data file or save_to_disk folder.")
    p.add_argument("--encoder", required=True, help="Hub repo id or local folder of a CLIP-style dual encoder.")
    p.add_argument("--corpus", default=None, help="Concept file (one per line); default: the built-in corpus.")
    p.add_argument("--extra-concepts", default=None, help="Comma-separated concepts added to the corpus.")
    p.add_argument("--samples", type=int, default=DataConfig.samples,
                   help=f"Images to sample (default {DataConfig.samples}; 0 = all).")
    p.add_argument("--config", dest="config_name", default=None, help="Dataset configuration name.")
    p.add_argument("--split", default=None, help="Dataset split (default: train, else the first).")
    p.add_argument("--image-column", default=DataConfig.image_column)
    p.add_argument("--label-column", default=DataConfig.label_column, help="'auto', a column name, or 'none' for no labels.")
    p.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction)
    p.add_argument("--seed", type=int, default=DataConfig.seed)
    p.add_argument("--template", default=ExtractConfig.template)
    p.add_argument("--region-mode", choices=("auto", "dense", "grid", "whole"), default=ExtractConfig.region_mode)
    p.add_argument("--batch-size", type=int, default=ExtractConfig.batch_size)
    p.add_argument("--num-workers", type=int, default=ExtractConfig.num_workers,
                   help="Input workers (default: one per core; 0 = decode in the main process).")
    p.add_argument("--device", default=ExtractConfig.device, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
    p.add_argument("--precision", choices=PRECISIONS, default=ExtractConfig.precision,
                   help="auto: bf16 autocast on GPUs that support it, fp16 on other GPUs, fp32 on the CPU.")
    p.add_argument("--shard-size", type=int, default=ExtractConfig.shard_size,
                   help=f"Images per shard written (default {ExtractConfig.shard_size}); a run resumes after the last.")
    p.add_argument("--keep-regions", action=argparse.BooleanOptionalAction, default=ExtractConfig.keep_regions,
                   help="Keep region embeddings to add concepts later without an image pass (default: up to 4 GiB).")
    p.add_argument("--draft", action="store_true", default=ExtractConfig.draft,
                   help="Decode large JPEGs at a reduced DCT scale (faster, not bit-exact).")
    p.add_argument("--cache-dir", default=None, help="Feature cache (default $INFINCOND_CACHE or ~/.cache/infincond).")


def _inputs(args: argparse.Namespace):
    """(corpus, DataConfig, ExtractConfig) from the shared options."""
    from .concepts.corpus import ConceptCorpus
    from .data import DataConfig
    from .features import ExtractConfig

    corpus = ConceptCorpus.resolve(args.corpus)
    if args.extra_concepts:
        corpus = corpus + ConceptCorpus.from_list(args.extra_concepts.split(","), source="cli")
    data = DataConfig(dataset=args.dataset, config_name=args.config_name, split=args.split,
                      image_column=args.image_column, label_column=args.label_column,
                      samples=args.samples or None, val_fraction=args.val_fraction, seed=args.seed)
    extract = ExtractConfig(template=args.template, region_mode=args.region_mode, batch_size=args.batch_size,
                            num_workers=args.num_workers, device=args.device, precision=args.precision,
                            shard_size=args.shard_size, keep_regions=args.keep_regions, draft=args.draft)
    return corpus, data, extract


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="Extract concept scores and teacher logits into the feature cache.",
                       description="Extract concept scores and teacher logits into the feature cache (what "
                                   "`distill` with the same options reuses). Several processes: "
                                   "accelerate launch -m infincond extract ...")
    _add_inputs(p)
    p.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    from .pipeline import load_and_extract

    corpus, data, extract = _inputs(args)
    *_, features = load_and_extract(args.teacher, data, args.encoder, corpus, extract=extract, cache_dir=args.cache_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        failed = features.provenance.get("n_failed", 0)
        regions = "kept" if features.region_embeddings is not None else "not kept"
        print(f"Features: {len(features.image_ids)} images x {features.num_concepts} concepts, "
              f"{features.num_classes} classes (regions {regions}; {failed} unreadable images left out)")
        print(f"Features written to {features.folder}")
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="Distil a teacher into a concept student and save it.")
    _add_inputs(p)
    p.add_argument("--out", required=True, help="Folder to write the student into.")
    p.add_argument("--nec", type=int, default=5, help="Effective concepts per class (default 5).")
    p.add_argument("--method", choices=("kd", "bce_ensemble"), default="kd")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--ensemble", type=int, default=None, help="Bootstrap members (default 1 for kd, 20 for bce).")
    p.set_defaults(func=_distill)


def _distill(args: argparse.Namespace) -> int:
    from .distill import DistillConfig
    from .pipeline import run_distillation

    corpus, data, extract = _inputs(args)
    run = run_distillation(
        args.teacher, data, args.encoder, corpus, extract=extract,
        distill_config=DistillConfig(method=args.method, nec=args.nec, temperature=args.temperature,
                                     ensemble=args.ensemble, seed=args.seed),
        cache_dir=args.cache_dir,
    )
    out = Path(args.out)
    run.student.save_pretrained(out)
    m = run.metrics  # saved beside the weights as metrics.json (with the student), and in its model card
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print(f"\nValidation ({m.n_images} images, {m.n_labelled} labelled):")
    print(f"  fidelity          {pct(m.fidelity)}")
    print(f"  KL to teacher     {m.kl:.4f}")
    print(f"  student accuracy  {pct(m.student_accuracy)}")
    print(f"  teacher accuracy  {pct(m.teacher_accuracy)}")
    print(f"  NEC per class     {m.nec:.1f}  (max {int(m.nec_per_class.max())})")
    print(f"  disagreements     {len(m.disagreement_ids)}")
    print(f"Student written to {out}")
    return 0


def _add_example(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("example", help="Build tiny local repos (teacher, encoder, dataset) and distil them.")
    p.add_argument("--out", default="artifacts/example", help="Folder for the repos and the student.")
    p.set_defaults(func=_example)


def _example(args: argparse.Namespace) -> int:
    """A self-contained, offline run of the whole pipeline on tiny real models built from configs."""
    from .testing import COLOURS, SHAPES, build_tiny_clip, build_tiny_teacher, make_shapes_dataset

    root = Path(args.out)
    classes = ("red", "green", "blue")
    words = [*COLOURS, *SHAPES]
    build_tiny_clip(root / "encoder", words)
    build_tiny_teacher(root / "teacher", classes)
    make_shapes_dataset(200, classes=classes).save_to_disk(str(root / "dataset"))
    print(f"Tiny repos written under {root}; distilling...")
    return main(["distill", "--teacher", str(root / "teacher"), "--dataset", str(root / "dataset"),
                 "--encoder", str(root / "encoder"), "--extra-concepts", ",".join(words), "--samples", "200",
                 "--nec", "3", "--out", str(root / "student"), "--cache-dir", str(root / "cache")])


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="The embedded offline Shapes world: build it, check it, find it.")
    demo = p.add_subparsers(dest="demo_command", required=True)
    for name, func, text in (("build", _demo_build, "Build the world's dataset, encoder and teacher repos."),
                             ("check", _demo_check, "Measure the world's quality figures."),
                             ("path", _demo_path, "Print where the world's repos are.")):
        q = demo.add_parser(name, help=text)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--root", default=None, help="World folder (default: in the cache, named by its config).")
        q.add_argument("--quick", action="store_true", help="A reduced world (tiny splits, a few steps), for tests.")
        if name == "build":
            q.add_argument("--force", action="store_true", help="Rebuild even if the world exists.")
        if name == "check":
            q.add_argument("--images", type=int, default=600, help="Fresh images for the encoder figures.")
            q.add_argument("--samples", type=int, default=2000, help="Train images to distil (0 = skip).")
        q.set_defaults(func=func)


def _world_config(args: argparse.Namespace):
    from .demo import WorldConfig

    return WorldConfig.quick(args.seed) if args.quick else WorldConfig(seed=args.seed)


def _demo_build(args: argparse.Namespace) -> int:
    from .demo import build_world

    world = build_world(_world_config(args), args.root, force=args.force)
    print(f"Shapes world ({world.manifest['seconds']['total']:.0f} s to build) in {world.root}:")
    for kind in ("dataset", "encoder", "teacher"):
        print(f"  {kind:<8} {getattr(world, kind)}")
    return 0


def _demo_check(args: argparse.Namespace) -> int:
    from .demo import check_world, load_world

    world = load_world(args.root, config=_world_config(args))
    report = check_world(world, n_images=args.images, distill_samples=args.samples or None)
    print(report.format())
    print(f"({report.seconds:.0f} s; saved to {world.root / 'check.json'})")
    return 0 if all(report.passes().values()) else 1


def _demo_path(args: argparse.Namespace) -> int:
    from .demo import load_world

    world = load_world(args.root, config=_world_config(args), build=False)
    print(world.root)
    return 0


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="Push a saved student folder to the Hub as a model repo.")
    p.add_argument("--student", required=True, help="Folder written by `infincond distill` or the app's Save.")
    p.add_argument("--repo", required=True, help="Hub repo id, e.g. your-name/shapes-student.")
    p.add_argument("--private", action="store_true", help="Create the repo private (when it does not exist yet).")
    p.add_argument("--token", default=None, help="A write token (default: $HF_TOKEN, or the cached login).")
    p.set_defaults(func=_push)


def _push(args: argparse.Namespace) -> int:
    from .student import ConceptStudent

    student = ConceptStudent.from_pretrained(args.student)
    info = student.push_to_hub(args.repo, private=args.private or None, token=args.token)
    print(f"Pushed {args.student} to {info.repo_url} (commit {info.oid[:10]}).")
    return 0


def _add_space(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="The app as a Hugging Face Space.")
    space = p.add_subparsers(dest="space_command", required=True)
    q = space.add_parser("deploy", help="Create or update a Gradio Space running the app (from a source checkout).")
    q.add_argument("--repo", required=True, help="Space repo id, e.g. your-name/infincond.")
    q.add_argument("--private", action="store_true")
    q.add_argument("--token", default=None, help="A write token (default: $HF_TOKEN).")
    q.set_defaults(func=_space_deploy)


def _space_deploy(args: argparse.Namespace) -> int:
    from .space import deploy_space

    url = deploy_space(args.repo, token=args.token, private=args.private)
    print(f"Deployed: {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infincond", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_extract(sub)
    _add_distill(sub)
    _add_example(sub)
    _add_demo(sub)
    _add_push(sub)
    _add_space(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InfinconError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
