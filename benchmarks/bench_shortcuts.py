"""Shortcuts: does the audit find the teacher's planted shortcut, and does one remove fix it and keep it fixed?

On Shapes worlds that it builds (the default, circle on water, which the method was developed on, and
others with other seeds and other planted class / background pairs, which it was not), each with the
built-in corpus plus the world's vocabulary and a student distilled at NEC 10 on all 6,000 `train` images:

1. The audit on the biased validation rows alone: the planted class's first finding (PASS when it is the
   planted background; the rank counts a finding whose proxies include it), and the time it takes.
2. On the balanced `test` split, side by side: the planted class's accuracy and the worst-group accuracy
   (class x background) of the teacher, the student, one remove of the planted background for the planted
   class (teacher only: no labels, its proxies held at 0), the same remove with labels (alpha 0.5, one action), the
   plain remove of before (no proxy held), post-hoc CBM (prune the concept from the class's row and
   renormalise the row's L1 norm, no refit), and a DFR-style ceiling (a logistic-regression head over all
   the concepts, trained with group labels on group-balanced weights); and the agreement with the teacher
   on the validation images the teacher classifies correctly. Whether any held proxy ended with a larger
   |weight| than before the remove. Beside the ratio of gains, the share of the class's headroom each
   closes: (after - before) / (100% - before), since where post-hoc CBM already closes more than two
   thirds of it, no method can gain 1.5x as much.
3. Audit and group metrics at N = 50,000, K = 800, C = 10 (synthetic scores).

Run: python benchmarks/bench_shortcuts.py [--worlds 0:circle:water,1:square:sand,...] [--quick]
(--quick: two reduced worlds and N = 5,000, a smoke run.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from infincond import ConceptCorpus, ConceptEncoder, DataConfig, DistillConfig, ImageSource, Teacher, distill
from infincond.audit import audit
from infincond.demo import WorldConfig, build_world
from infincond.demo.scenes import SceneConfig
from infincond.groups import groups_from_column
from infincond.metrics import evaluate
from infincond.testing import planted_features
from infincond.tuning import Kind, TuningSession

#: (seed, planted class, planted background, whether the method was developed on it). World 4 was held out
#: at first; it showed that holding proxies where they were left a student that had spread water over
#: them (0.26 on water itself) leaning on water, so proxies are now held at 0: it counts as developed on.
#: Worlds 5 and 6 were built after that change, to check it.
WORLDS = [(0, "circle", "water", True), (1, "square", "sand", False), (2, "triangle", "snow", False),
          (3, "star", "grass", False), (4, "diamond", "water", True), (5, "cross", "sand", False),
          (6, "circle", "snow", False)]


def world_config(seed: int, cls: str, background: str, quick: bool) -> WorldConfig:
    scenes = SceneConfig(spurious_class=cls, spurious_background=background)
    if quick:
        base = WorldConfig.quick(seed)
        return WorldConfig(seed=seed, scenes=SceneConfig(**{**base.scenes.to_dict(), "spurious_class": cls,
                                                            "spurious_background": background}),
                           encoder=base.encoder, teacher=base.teacher)
    return WorldConfig(seed=seed, scenes=scenes)


def world_features(config: WorldConfig, quick: bool):
    from infincond import extract_features

    world = build_world(config, Path(tempfile.mkdtemp()) / "shapes" if quick else None, progress=False)
    corpus = ConceptCorpus.builtin() + ConceptCorpus.from_list(world.concepts, source="world")
    out, teacher, encoder = {}, None, None
    for split in ("train", "test"):
        source = ImageSource.load(DataConfig(world.dataset, split=split, samples=None))
        if teacher is None:
            teacher = Teacher.from_pretrained(world.teacher, dataset_label_names=source.label_names, device="cpu")
            encoder = ConceptEncoder.from_pretrained(world.encoder, device="cpu")
        features = extract_features(source, teacher, encoder, corpus, cache_dir=False if quick else None,
                                    progress=False)
        out[split] = (features, source)
    return out


def dfr_ceiling(train, test, test_groups, train_groups) -> tuple[np.ndarray, str]:
    """Test predictions of a group-balanced logistic-regression head over every concept (DFR's recipe on
    fixed features: each class x background group weighs the same)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labelled = train.labels_as_classes >= 0
    codes = train_groups.codes[labelled]
    weights = 1.0 / np.bincount(codes)[codes]
    scaler = StandardScaler().fit(train.concept_scores[labelled])
    head = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(train.concept_scores[labelled]),
                                                          train.labels_as_classes[labelled], sample_weight=weights)
    return head.predict(scaler.transform(test.concept_scores)), "DFR-style ceiling (group-balanced head, labels)"


def measure(seed: int, cls: str, background: str, developed: bool, quick: bool) -> dict:
    config = world_config(seed, cls, background, quick)
    start = time.perf_counter()
    data = world_features(config, quick)
    (train, train_source), (test, test_source) = data["train"], data["test"]
    prep = time.perf_counter() - start
    student = distill(train, DistillConfig(nec=10))
    groups = groups_from_column(test, test_source, "background")
    train_groups = groups_from_column(train, train_source, "background")
    report = audit(train, student)
    head = report.for_class(cls)[0] if report.for_class(cls) else None
    rank = report.rank(cls, background)
    c = train.class_names.index(cls)
    correct_val = train.is_val & (train.teacher_logits.argmax(1) == train.labels_as_classes)

    def row(name: str, weight=None, bias=None, predictions=None, seconds=None, session=None) -> dict:
        labels = test.labels_as_classes
        if predictions is None:
            logits = student.logits_of_standardised(student.standardise(test.concept_scores), weight, bias)
            predictions = logits.argmax(1)
            agree = (
                student.logits_of_standardised(
                    student.standardise(train.concept_scores[correct_val]), weight, bias
                ).argmax(1)
                == train.teacher_logits[correct_val].argmax(1)
            ).mean()
        else:
            agree = None
        onehot = np.eye(len(train.class_names), dtype=np.float32)[predictions]
        m = evaluate(onehot, test.teacher_logits, labels, test.image_ids, test.class_names,
                     np.zeros(len(train.class_names)), groups=groups)
        return {"name": name, "cls": m.class_accuracy[c], "wga": m.worst_group[1], "worst": m.worst_group[0],
                "all": m.accuracy, "agree": agree, "seconds": seconds, "session": session}

    rows = [row("teacher", predictions=test.teacher_logits.argmax(1)),
            row("distilled student", student.weight, student.bias)]
    rows[0]["agree"] = 1.0
    k = train.concepts.index(background)

    def session_row(name: str, target: str | None = cls, **remove) -> dict:
        session = TuningSession(train, student, eval_features=test, groups=groups)
        entry = session.remove(background, target, **remove)
        return row(name, session.weight, session.state.bias, seconds=entry.seconds, session=session)

    one = session_row(f"remove '{background}' for {cls} (teacher only, its proxies held at 0)")
    rows += [one, session_row("the same remove, with labels (alpha 0.5)", label_weight=0.5),
             session_row("plain remove, no proxy held (before)", proxies=[])]
    pruned = student.weight.copy()
    norm = np.abs(pruned[c]).sum()
    pruned[c, k] = 0.0
    pruned[c] *= norm / np.abs(pruned[c]).sum()
    rows.append(row("post-hoc CBM: prune + renormalise, no refit", pruned, student.bias))
    predictions, name = dfr_ceiling(train, test, groups, train_groups)
    rows.append(row(name, predictions=predictions))
    rows.append(session_row(f"remove '{background}' for every class (teacher only), for comparison", None))
    held = one["session"].log[-1].held
    grew = [h["concept"] for h in held if abs(h["after"]) > abs(h["before"]) + 1e-9]
    kinds = one["session"].state.kind[c]
    return {"world": f"seed {seed}, {cls} on {background}", "developed": developed, "prep": prep,
            "audit_seconds": report.seconds, "rank": rank, "head": head.concept if head else None,
            "head_score": head.score if head else None, "rows": rows, "held": [h["concept"] for h in held],
            "held_grew": grew, "n_held": int((kinds == Kind.HELD).sum())}


def print_world(result: dict) -> None:
    rows = result["rows"]
    cls_name = result["world"].split(", ")[1].split(" on ")[0]
    tag = "developed on it" if result["developed"] else "held out: not tuned on it"
    print(f"\n=== Shapes world {result['world']} ({tag}; features in {result['prep']:.0f} s)")
    print(f"audit on the biased validation rows: first finding for {cls_name}: '{result['head']}' "
          f"(score {result['head_score']:.2f}); rank of the planted concept: {result['rank']}; "
          f"{result['audit_seconds'] * 1e3:.0f} ms")
    print(f"\n| method | {cls_name} acc. (test) | worst-group acc. (test) | worst group | overall (test) | "
          f"agreement with the teacher where it is right (val) | refit |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    base = rows[1]
    for r in rows:
        gain = (r["cls"] - base["cls"]) * 100
        agree = "" if r["agree"] is None else f"{r['agree']:.1%}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.2f} s"
        print(f"| {r['name']} | {r['cls']:.1%} ({gain:+.1f}) | {r['wga']:.1%} | {r['worst']} | {r['all']:.1%} | "
              f"{agree} | {secs} |")
    one, cbm = rows[2], rows[5]
    ours, theirs = one["cls"] - base["cls"], cbm["cls"] - base["cls"]
    ratio = ours / theirs if theirs > 0 else float("inf")
    headroom = 1.0 - base["cls"]
    print(f"\none remove vs post-hoc CBM, gain in {cls_name}'s test accuracy: {ours * 100:+.1f} vs {theirs * 100:+.1f} "
          f"pts -> {ratio:.2f}x (target >= 1.5x, never falling: {'PASS' if ratio >= 1.5 and ours >= 0 else 'FAIL'}); "
          f"headroom closed {ours / headroom:.0%} vs {theirs / headroom:.0%} (1.5x reachable: "
          f"{'yes' if 1.5 * theirs <= headroom else 'no'})")
    print(f"WGA {base['wga']:.1%} -> {one['wga']:.1%} ({'PASS' if one['wga'] > base['wga'] else 'FAIL'}); "
          f"agreement where the teacher is right {one['agree']:.1%} (target >= 95%: "
          f"{'PASS' if one['agree'] >= 0.95 else 'FAIL'}); proxies held {result['held']}, any grew: "
          f"{result['held_grew'] or 'none'}; audit: first finding '{result['head']}', planted concept's rank "
          f"{result['rank']} ({'PASS' if result['head'] == planted_concept(result) else 'FAIL'})")


def planted_concept(result: dict) -> str:
    return result["world"].split(" on ")[1]


def scale(quick: bool) -> None:
    n, k, c = (5_000, 800, 10) if quick else (50_000, 800, 10)
    features = planted_features(n=n, k=k, c=c, nec=10, val_fraction=0.2, seed=0)
    student = distill(features, DistillConfig(nec=10))
    rng = np.random.default_rng(0)
    values = rng.choice(["a", "b", "c", "d"], size=n)
    from infincond.groups import cross

    start = time.perf_counter()
    groups = cross(features.labels_as_classes, features.class_names, values, "attribute")
    session = TuningSession(features, student, groups=groups)
    metrics = session.evaluate()
    group_s = time.perf_counter() - start
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        audit(features, student)
        timings.append(time.perf_counter() - start)
    whole = []
    for _ in range(2):
        start = time.perf_counter()
        audit(features, student, np.ones(n, dtype=bool))
        whole.append(time.perf_counter() - start)
    print(f"\n=== Scale: N={n}, K={k}, C={c} ({int(features.is_val.sum())} validation rows)")
    print(f"group metrics ({len(groups.names)} groups, worst {metrics.worst_group[0]} "
          f"{metrics.worst_group[1]:.1%}), session start included: {group_s:.2f} s")
    print(f"audit on the validation rows: median {np.median(timings):.2f} s, on all {n} rows: median "
          f"{np.median(whole):.2f} s (target <= 2 s: {'PASS' if max(whole) <= 2 and group_s <= 2 else 'FAIL'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worlds", default=None, help="seed:class:background,... (default: the five worlds)")
    parser.add_argument("--quick", action="store_true", help="two reduced worlds and N=5,000: a smoke run")
    args = parser.parse_args()
    worlds = WORLDS[:2] if args.quick else WORLDS
    if args.worlds:
        developed = {(seed, cls, bg): dev for seed, cls, bg, dev in WORLDS}
        worlds = [(int(s), c, b, developed.get((int(s), c, b), False)) for s, c, b in
                  (spec.split(":") for spec in args.worlds.split(","))]
    for seed, cls, background, developed in worlds:
        print_world(measure(seed, cls, background, developed, args.quick))
    scale(args.quick)


if __name__ == "__main__":
    main()
