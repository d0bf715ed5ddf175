"""No-code tuning: does editing fix a spurious concept, and is it fast enough to be interactive?

1. Editing on the Shapes world. The teacher learnt "circle <- water" (90% of training circles lie on
   water). From the distilled student (built-in corpus + the world's vocabulary, NEC 10, all 6,000 train
   images), scripted edits are scored on the balanced `test` split (every class on every background),
   side by side with the post-hoc-CBM-style baseline on the same student: prune the concept from the
   class's row and renormalise the row to its former L1 norm, no refit (and plain pruning).
2. Interactive speed on synthetic scores, N=50,000, K=600, C=10: metric refresh after a weight change
   without refit (the what-if preview) and the warm-started constrained refit of an applied edit, against
   a cold constrained distillation from scratch with the same constraints.
3. Provenance: export the log, replay it on the same features, compare the final weights.

Run: python benchmarks/bench_tuning.py [--quick]   (--quick: the reduced world and N=5,000, a smoke run)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from infincond import (
    ConceptCorpus,
    ConceptEncoder,
    Constraints,
    DataConfig,
    DistillConfig,
    ImageSource,
    Teacher,
    distill,
    evaluate_student,
    extract_features,
    fit,
)
from infincond.demo import THRESHOLDS, WorldConfig, build_world, load_world
from infincond.testing import planted_features
from infincond.tuning import Edit, TuningSession


def world_features(quick: bool):
    world = (build_world(WorldConfig.quick(), Path(tempfile.mkdtemp()) / "shapes", progress=False) if quick
             else load_world())
    corpus = ConceptCorpus.builtin() + ConceptCorpus.from_list(world.concepts, source="world")
    train = ImageSource.load(DataConfig(world.dataset, split="train", samples=None))
    test = ImageSource.load(DataConfig(world.dataset, split="test", samples=None))
    teacher = Teacher.from_pretrained(world.teacher, dataset_label_names=train.label_names, device="cpu")
    encoder = ConceptEncoder.from_pretrained(world.encoder, device="cpu")
    cache = False if quick else None
    return (world, extract_features(train, teacher, encoder, corpus, cache_dir=cache, progress=True),
            extract_features(test, teacher, encoder, corpus, cache_dir=cache, progress=True))


def editing(quick: bool) -> None:
    world, train, test = world_features(quick)
    cls, concept = world.spurious_class, world.spurious_background
    student = distill(train, DistillConfig(nec=THRESHOLDS["nec"]))
    print(f"\n== 1. Editing on the Shapes world: {len(train.is_val)} train images ({int(train.is_val.sum())} val), "
          f"{len(test.is_val)} balanced test images, K={train.num_concepts}, NEC {student.nec:.1f}")
    base = TuningSession(train, student, eval_features=test)
    c, k = base.class_id(cls), base.concept_id(concept)
    w = base.weight
    top = [(base.concepts[j], round(float(w[c, j]), 2)) for j in np.argsort(-np.abs(w[c]))[:5] if w[c, j] != 0]
    print(f"student's top concepts for {cls}: {top}")

    def row(name: str, edits: int, metrics: dict, val_fidelity: float, refit_s: float | None) -> dict:
        return {"name": name, "edits": edits, "cls": metrics["per_class"][cls]["accuracy"],
                "all": metrics["accuracy"], "fidelity": metrics["fidelity"], "val_fidelity": val_fidelity,
                "seconds": refit_s}

    start = base.metrics
    rows = [row("distilled student", 0, start, evaluate_student(train, student).fidelity, None)]

    def pruned(renormalise: bool) -> dict:
        weight = base.weight.copy()
        old = np.abs(weight[c]).sum()
        weight[c, k] = 0.0
        if renormalise and np.abs(weight[c]).sum() > 0:
            weight[c] *= old / np.abs(weight[c]).sum()
        probe = base.student
        probe.weight = weight
        return row(
            f"baseline: prune '{concept}'{' + renormalise row' if renormalise else ''}, no refit",
            1,
            base.evaluator.metrics(weight, base.state.bias).to_dict(),
            evaluate_student(train, probe).fidelity,
            None,
        )

    rows += [pruned(False), pruned(True)]
    scripts = {
        f"remove '{concept}' for {cls}, refit": [Edit("remove", concept, cls)],
        f"down-tune '{concept}' for {cls} x4, refit": [Edit("down", concept, cls, 4)],
        f"remove '{concept}' for {cls}; blend labels alpha 0.5; up-tune '{cls}' for {cls} x2":
            [Edit("remove", concept, cls), 0.5, Edit("up", cls, cls, 2)],
    }
    for name, script in scripts.items():
        session = TuningSession(train, student, eval_features=test)
        seconds = 0.0
        for action in script:
            entry = session.set_label_weight(action) if isinstance(action, float) else session.apply(action)
            seconds += entry.seconds
        rows.append(row(name, len(script), session.metrics, evaluate_student(train, session.student).fidelity, seconds))

    print(f"\n| method | edits | {cls} acc. (test) | overall acc. (test) | fidelity (test) | fidelity (val) "
          "| refit time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        gain = (r["cls"] - rows[0]["cls"]) * 100
        overall = (r["all"] - rows[0]["all"]) * 100
        secs = "" if r["seconds"] is None else f"{r['seconds']:.2f} s"
        print(f"| {r['name']} | {r['edits']} | {r['cls']:.1%} ({gain:+.1f}) | {r['all']:.1%} ({overall:+.1f}) | "
              f"{r['fidelity']:.1%} | {r['val_fidelity']:.1%} | {secs} |")
    baseline = rows[2]
    print("\nSide by side with the prune + renormalise baseline (gain in the biased class's test accuracy):")
    for r in rows[3:]:
        ours, theirs = r["cls"] - rows[0]["cls"], baseline["cls"] - rows[0]["cls"]
        ratio = f"{ours / theirs:.2f}x" if theirs > 0 else "n/a (baseline gains nothing)"
        verdict = "PASS" if ours >= 0.10 and r["all"] >= rows[0]["all"] else "FAIL"
        print(f"  {r['name']}: {ours * 100:+.1f} pts vs {theirs * 100:+.1f} pts -> {ratio}; "
              f"target +10 pts with overall not falling: {verdict}")


def speed(quick: bool) -> TuningSession:
    n, k, c = (5_000, 600, 10) if quick else (50_000, 600, 10)
    features = planted_features(n=n, k=k, c=c, nec=10, val_fraction=0.0, seed=0)
    print(f"\n== 2. Interactive speed: N={n} (refit and metrics on all N rows), K={k}, C={c}; "
          f"torch threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    for nec in (10, 40):
        config = DistillConfig(nec=nec)
        start = time.perf_counter()
        student = distill(features, config)
        distill_s = time.perf_counter() - start
        session = TuningSession(features, student)
        used = np.argwhere(session.weight != 0)
        picks = used[rng.permutation(len(used))[:30]]
        previews = []
        for i, (ci, ki) in enumerate(picks[:20]):
            edit = Edit("up" if i % 2 else "down", session.concepts[ki], session.class_names[ci], 2.0)
            t = time.perf_counter()
            session.preview(edit)
            previews.append(time.perf_counter() - t)
        refits = []
        for i, (ci, ki) in enumerate(picks[20:30]):
            action = ("down", "up", "remove")[i % 3]
            edit = Edit(action, session.concepts[ki], session.class_names[ci], 2.0 if action != "remove" else None)
            refits.append(session.apply(edit).seconds)
        # A cold constrained distillation with the final constraints, from scratch (L1 path + refit).
        start = time.perf_counter()
        cold = fit(features.concept_scores, features.teacher_logits, config,
                   Constraints(session.state.lower.copy(), session.state.upper.copy()))
        cold_s = time.perf_counter() - start
        print(f"NEC {nec} (student NEC {student.nec:.1f}, distilled in {distill_s:.2f} s):")
        print(f"  metric refresh without refit (preview), 20 edits: median {np.median(previews) * 1e3:.1f} ms, "
              f"max {np.max(previews) * 1e3:.1f} ms; target <= 100 ms -> "
              f"{'PASS' if np.max(previews) <= 0.1 else 'FAIL'} ({np.median(previews) / 0.1:.2f}x of the budget)")
        print(f"  warm-started constrained refit, 10 applied edits: median {np.median(refits):.2f} s, "
              f"max {np.max(refits):.2f} s; target <= 2 s -> {'PASS' if np.max(refits) <= 2 else 'FAIL'}")
        print(f"  cold constrained distillation with the same constraints: {cold_s:.2f} s "
              f"(fidelity {evaluate_student(features, cold, 'all').fidelity:.4f} vs warm "
              f"{session.metrics['fidelity']:.4f}); warm refit is {cold_s / np.median(refits):.1f}x faster")
    return session


def replay(session: TuningSession) -> None:
    session.undo()
    session.set_label_weight(0.5)
    session.jump(3)
    start = time.perf_counter()
    log = session.export_log()
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    replayed = TuningSession.replay(session.features, log)
    replay_s = time.perf_counter() - start
    gap = float(np.max(np.abs(replayed.weight - session.weight)))
    print(
        f"\n== 3. Replay: {len(log['entries'])} log entries exported in {export_s:.2f} s, "
        f"replayed in {replay_s:.2f} s; "
        f"largest weight gap {gap:.2e} (target <= 1e-6: {'PASS' if gap <= 1e-6 else 'FAIL'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the reduced world and N=5,000: a smoke run")
    args = parser.parse_args()
    editing(args.quick)
    replay(speed(args.quick))


if __name__ == "__main__":
    main()
