"""Command line: ``infincond extract | distill | audit | example | demo | push | space deploy`` (``infincond -h``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from .errors import InfinconError
from .metrics import format_groups, percent


def config_option(parser: argparse.ArgumentParser, config: type, name: str, flag: str | None = None,
                  **overrides) -> None:
    """Add ``--name`` for a field of a config dataclass: its default, type, choices (``Literal`` fields) and
    help are read from the dataclass, so the CLI never restates them."""
    spec = next(f for f in fields(config) if f.name == name)
    hint = get_type_hints(config)[name]
    if get_origin(hint) in (Union, UnionType):  # "int | None": the value's type
        hint = next(t for t in get_args(hint) if t is not type(None))
    choices = get_args(hint) if get_origin(hint) is Literal else None
    default = overrides.pop("default", None if spec.default is MISSING else spec.default)
    text = spec.metadata.get("help", "")
    options = {"dest": name, "type": None if choices or hint is bool else hint, "choices": choices,
               "default": default, "help": f"{text} (default: {default})" if default is not None else text}
    if hint is bool:  # --flag / --no-flag
        options["action"] = argparse.BooleanOptionalAction
    parser.add_argument(flag or "--" + name.replace("_", "-"), **{**options, **overrides})


#: The DataConfig and ExtractConfig fields the data options set (dataset, samples and config_name first:
#: they have their own flags), each an option named after its field.
DATA_OPTIONS = ("dataset", "samples", "config_name", "split", "image_column", "label_column", "val_fraction", "seed")
#: The DistillConfig fields `distill` sets (the seed is the data options' own).
DISTILL_OPTIONS = ("nec", "method", "temperature", "ensemble")
EXTRACT_OPTIONS = ("template", "region_mode", "batch_size", "num_workers", "device", "precision", "shard_size",
                   "keep_regions", "draft")


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """The options ``extract`` and ``distill`` share: what to extract from and how (one cache key)."""
    from .data import DataConfig
    from .features import ExtractConfig

    p.add_argument("--teacher", required=True, help="Hub repo id or local folder of an image classifier.")
    config_option(p, DataConfig, "dataset", required=True)
    p.add_argument("--encoder", required=True, help="Hub repo id or local folder of a CLIP-style dual encoder.")
    p.add_argument("--corpus", default=None, help="Concept file (one per line); default: the built-in corpus.")
    p.add_argument("--extra-concepts", default=None, help="Comma-separated concepts added to the corpus.")
    config_option(p, DataConfig, "samples", help=f"Images to sample, 0 = all (default: {DataConfig.samples}).")
    config_option(p, DataConfig, "config_name", "--config")
    for name in DATA_OPTIONS[3:]:
        config_option(p, DataConfig, name)
    for name in EXTRACT_OPTIONS:
        config_option(p, ExtractConfig, name)
    p.add_argument("--cache-dir", default=None, help="Feature cache (default $INFINCOND_CACHE or ~/.cache/infincond).")


def _inputs(args: argparse.Namespace):
    """(DataConfig, ExtractConfig, corpus) from the shared options."""
    from .concepts.corpus import ConceptCorpus
    from .data import DataConfig
    from .features import ExtractConfig

    corpus = ConceptCorpus.resolve(args.corpus)
    if args.extra_concepts:
        corpus = corpus + ConceptCorpus.from_list(args.extra_concepts.split(","), source="cli")
    data = DataConfig(**{name: getattr(args, name) for name in DATA_OPTIONS} | {"samples": args.samples or None})
    extract = ExtractConfig(**{name: getattr(args, name) for name in EXTRACT_OPTIONS})
    return data, extract, corpus


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="Extract concept scores and teacher logits into the feature cache.",
                       description="Extract concept scores and teacher logits into the feature cache (what "
                                   "`distill` with the same options reuses). Several processes: "
                                   "accelerate launch -m infincond extract ...")
    _add_inputs(p)
    p.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    from .extract.runtime import processes
    from .pipeline import extract_concepts, load_inputs

    data, extract, corpus = _inputs(args)
    inputs = load_inputs(args.teacher, data, args.encoder, corpus, extract=extract)
    features = extract_concepts(inputs, args.cache_dir)
    if processes(extract.device).is_main:  # the state load_inputs set up: one report, from the main process
        failed = features.provenance.get("n_failed", 0)
        regions = "kept" if features.region_embeddings is not None else "not kept"
        print(f"Features: {len(features.image_ids)} images x {features.num_concepts} concepts, "
              f"{features.num_classes} classes (regions {regions}; {failed} unreadable images left out)")
        merged = features.provenance.get("merged_concepts") or []
        if merged:
            print(f"{len(merged)} concept spelling(s) merged as the same concept: "
                  + ", ".join(f"{gone} -> {kept}" for kept, gone in merged))
        print(f"Features written to {features.folder}")
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    from .distill import DistillConfig

    p = sub.add_parser("distill", help="Distil a teacher into a concept student and save it.")
    _add_inputs(p)
    p.add_argument("--out", required=True, help="Folder to write the student into (new, empty, or a previous "
                                                "student's).")
    for name in DISTILL_OPTIONS:
        config_option(p, DistillConfig, name)
    _add_group_column(p)
    p.set_defaults(func=_distill)


def _add_group_column(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-column", default=None,
                   help="A categorical dataset column (e.g. background), or concept:<name>: accuracy per group "
                        "of class x its values (or the concept present / absent), and the worst group's.")


def _distill(args: argparse.Namespace) -> int:
    from .distill import DistillConfig
    from .pipeline import run_distillation
    from .storage import check_folder_target
    from .student import holds_student

    # Before any long work: the student must be saveable where asked, and every setting valid.
    check_folder_target(args.out, what="a student", replaceable=holds_student)
    data, extract, corpus = _inputs(args)
    config = DistillConfig(**{name: getattr(args, name) for name in DISTILL_OPTIONS}, seed=args.seed)
    run = run_distillation(args.teacher, data, args.encoder, corpus, extract=extract, distill_config=config,
                           cache_dir=args.cache_dir, group_column=args.group_column)
    out = Path(args.out)
    run.student.save_pretrained(out)
    m = run.metrics.to_dict()  # saved beside the weights as metrics.json, and in the model card
    print(f"\nValidation ({m['n_images']} images, {m['n_labelled']} labelled):")
    print(f"  fidelity          {percent(m['fidelity'])}")
    print(f"  KL to teacher     {m['kl']:.4f}")
    print(f"  student accuracy  {percent(m['accuracy'])}")
    print(f"  teacher accuracy  {percent(m['teacher_accuracy'])}")
    print(f"  NEC per class     {m['nec']:.1f}  (max {int(run.metrics.nec_per_class.max())})")
    print(f"  disagreements     {m['n_disagreements']}")
    if m.get("groups"):
        print(*format_groups(m["groups"]), sep="\n")
    print(f"Student written to {out}")
    return 0


def _add_audit(sub: argparse._SubParsersAction) -> None:
    from .distill import DistillConfig

    p = sub.add_parser("audit", help="Find the concepts the teacher relies on beyond the label (its shortcuts).",
                       description="Distil a student (cached features), then rank, per class, the concepts the "
                                   "teacher's belief moves with beyond the label, on the validation rows or on "
                                   "another labelled split; each with the group of images it hurts.")
    _add_inputs(p)
    config_option(p, DistillConfig, "nec")
    p.add_argument("--audit-split", default=None, help="Audit on every image of this labelled split (e.g. a "
                                                       "balanced test split) instead of the validation rows.")
    _add_group_column(p)
    p.add_argument("--top", type=int, default=20, help="Findings to print (default: 20).")
    p.add_argument("--json", default=None, help="Write every finding, best first, to this JSON file.")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .audit import audit
    from .distill import DistillConfig, distill
    from .groups import groups_for
    from .metrics import evaluate_student
    from .pipeline import extract_concepts, load_inputs, on_split
    from .storage import atomic_write_text

    data, extract, corpus = _inputs(args)
    inputs = load_inputs(args.teacher, data, args.encoder, corpus, extract=extract)
    features = extract_concepts(inputs, args.cache_dir)
    audited_inputs = on_split(inputs, args.audit_split) if args.audit_split else inputs  # checked before distilling
    audited = extract_concepts(audited_inputs, args.cache_dir) if args.audit_split else features
    groups = groups_for(audited, audited_inputs.source, args.group_column)
    student = distill(features, DistillConfig(nec=args.nec, seed=args.seed))
    rows = np.ones(len(audited.is_val), dtype=bool) if args.audit_split else None
    report = audit(audited, student, rows)
    where = f"split {args.audit_split!r}" if args.audit_split else "the validation rows"
    print(f"\nShortcut audit on {where} ({report.n_images} images; {report.seconds:.2f} s). {report.note}")
    print(report.format(args.top))
    if groups is None and report.findings:  # no column named: class x the top finding's concept, present or absent
        groups = groups_for(audited, audited_inputs.source, f"concept:{report.findings[0].concept}")
    if groups is not None:
        rows_evaluated = "all" if args.audit_split else "val"
        print(f"\nOn {where}:")
        print(*format_groups(evaluate_student(audited, student, rows_evaluated, groups).to_dict()["groups"]), sep="\n")
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=1))
        print(f"Findings written to {args.json}")
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
    from .hub import check_repo_id
    from .student import ConceptStudent

    check_repo_id(args.repo)
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
    _add_audit(sub)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
