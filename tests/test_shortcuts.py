"""Shortcuts: groups and worst-group accuracy, which concepts track which, the audit, and a remove that holds
its concept's proxies, on a synthetic world with a planted shortcut (circle <- water, as the Shapes
world's) and on the reduced Shapes world through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infincond import ConfigError, DistillConfig, distill
from infincond.audit import audit, evidence
from infincond.card import card_data
from infincond.groups import cross, groups_for, presence_split
from infincond.metrics import evaluate
from infincond.proxies import Tracking
from infincond.testing import shortcut_features
from infincond.tuning import Edit, Kind, TuningSession
from infincond.tuning.log import LOG_VERSION
from infincond.tuning.logformat import read_log

TRAIN = shortcut_features(seed=0)
TEST = shortcut_features(seed=1, biased=False)
STUDENT = distill(TRAIN, DistillConfig(nec=3))


def background(features) -> np.ndarray:
    return features.provenance["background"]


def test_groups_cross_class_and_value_and_skip_unlabelled_images():
    labels = np.array([0, 0, 1, 1, -1, 2])
    groups = cross(labels, ["a", "b", "c"], ["x", "y", "x", "x", "y", "y"], "attr")
    assert groups.names == ("a · x", "a · y", "b · x", "c · y")
    assert groups.codes.tolist() == [0, 1, 2, 2, -1, 3]
    with pytest.raises(ConfigError, match="no image has a label"):
        cross(np.full(3, -1), ["a"], ["x", "y", "x"], "attr")


def test_group_accuracy_and_worst_group_match_a_direct_count():
    rng = np.random.default_rng(0)
    n, c = 500, 3
    labels = rng.integers(0, c, n)
    values = rng.choice(["land", "water"], n)
    teacher, student = rng.normal(size=(n, c)), rng.normal(size=(n, c))
    student[np.arange(n), labels] += 1.0  # a better student than chance
    groups = cross(labels, ["a", "b", "c"], values, "background")
    m = evaluate(student, teacher, labels, np.arange(n), ["a", "b", "c"], np.ones(c), groups=groups)
    expected = {}
    for cls in range(c):
        for value in ("land", "water"):
            mask = (labels == cls) & (values == value)
            expected[f"{'abc'[cls]} · {value}"] = (student[mask].argmax(1) == cls).mean()
    got = {name: g["accuracy"] for name, g in m.to_dict()["groups"]["per_group"].items()}
    assert got == pytest.approx(expected)
    worst = min(expected, key=expected.get)
    assert m.worst_group == (worst, pytest.approx(expected[worst]))
    assert m.to_dict()["groups"]["worst_group"] == worst


def test_presence_split_finds_the_two_modes():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.15, 0.03, 300), rng.normal(0.6, 0.05, 100)])
    present = presence_split(scores)
    assert present[:300].sum() == 0 and present[300:].all()
    assert not presence_split(np.full(10, 0.3)).any()


def test_within_class_correlation_tells_a_proxy_from_the_true_feature():
    """On biased data the circle's own concept correlates with water overall, but not within classes; the
    water proxies do, whatever the class."""
    x = STUDENT.standardise(TRAIN.concept_scores)
    tracking = Tracking(x, TRAIN.labels)
    water = TRAIN.concepts.index("water")
    r = tracking.correlation(water)
    centred = x.astype(np.float64).copy()  # the same figure, computed directly
    for cls in range(3):
        centred[TRAIN.labels == cls] -= centred[TRAIN.labels == cls].mean(0)
    direct = [np.corrcoef(centred[:, water], centred[:, j])[0, 1] for j in range(len(TRAIN.concepts))]
    np.testing.assert_allclose(r, direct, atol=1e-5)
    circle = TRAIN.concepts.index("circle")
    assert np.corrcoef(x[:, circle], x[:, water])[0, 1] > 0.5  # overall: the bias
    assert abs(r[circle]) < 0.2  # within classes: none
    assert [TRAIN.concepts[j] for j, _ in tracking.proxies(water)] == ["water drops", "water pipe"] or \
        [TRAIN.concepts[j] for j, _ in tracking.proxies(water)] == ["water pipe", "water drops"]
    block = tracking.among(np.array([water, circle, TRAIN.concepts.index("water pipe")]))
    np.testing.assert_allclose(block[0], r[[water, circle, TRAIN.concepts.index("water pipe")]], atol=1e-5)


def test_audit_ranks_the_planted_shortcut_first_and_names_the_group_it_hurts():
    report = audit(TRAIN, STUDENT)
    first = report.for_class("circle")[0]
    assert (first.concept, report.rank("circle", "water")) == ("water", 1)
    assert set(first.proxies) == {"water pipe", "water drops"}  # folded into the finding
    assert report.findings[0] is first  # the strongest finding overall
    assert first.teacher_accuracy_with > first.teacher_accuracy_without or \
        first.hurt_group == "not circle, with 'water'"
    assert first.hurt_teacher_accuracy is not None and first.hurt_teacher_accuracy < 1.0
    val = np.nonzero(TRAIN.is_val)[0]
    assert set(first.hurt_positions) <= set(val)
    exported = report.to_dict()["findings"][0]
    assert list(exported)[:3] == ["class", "concept", "score"] and exported["concept"] == "water"
    assert report.labelled and "label held" in report.note


def test_evidence_is_a_within_label_correlation():
    x = STUDENT.standardise(TRAIN.concept_scores)
    order = np.argsort(TRAIN.labels, kind="stable")
    found = evidence(x[order], TRAIN.teacher_logits[order], TRAIN.labels[order])
    z = TRAIN.teacher_logits - TRAIN.teacher_logits.max(1, keepdims=True)
    belief = z - np.log(np.exp(z).sum(1, keepdims=True))
    water = TRAIN.concepts.index("water")
    mine = TRAIN.labels == 0
    first = np.corrcoef(x[mine, water], belief[mine, 0])[0, 1]
    others = ~mine
    xc, bc = x[others, water].astype(np.float64), belief[others, 0].astype(np.float64)
    for cls in (1, 2):
        part = TRAIN.labels[others] == cls
        xc[part] -= xc[part].mean()
        bc[part] -= bc[part].mean()
    second = (xc * bc).sum() / np.sqrt((xc**2).sum() * (bc**2).sum())
    assert found[0, water] == pytest.approx(first + second, abs=1e-4)


def test_without_labels_the_audit_ranks_by_influence_and_says_labels_would_sharpen_it():
    unlabelled = shortcut_features(seed=0)
    unlabelled.dataset_label_names = None
    report = audit(unlabelled, STUDENT)
    assert not report.labelled and "Labels would sharpen it" in report.note
    assert all(f.evidence is None and f.teacher_accuracy_with is None for f in report.findings)
    assert report.rank("circle", "water") == 1


def test_a_plain_remove_hands_the_weight_to_a_proxy_and_the_proxy_report_says_so():
    session = TuningSession(TRAIN, STUDENT)
    pipe = session.concept_id("water pipe")
    before = abs(session.weight[0, pipe])
    entry = session.remove("water", "circle", proxies=[])
    assert abs(session.weight[0, pipe]) > before + 0.3  # the failure the held remove prevents
    assert {"concept": "water pipe", "tracks": "water"}.items() <= entry.rose[0].items()


def test_a_remove_holds_the_proxies_and_fixes_the_worst_group():
    groups = cross(TEST.labels_as_classes, TEST.class_names, background(TEST), "background")
    session = TuningSession(TRAIN, STUDENT, eval_features=TEST, groups=groups)
    wga = session.metrics["groups"]["worst_group_accuracy"]
    start = session.weight.copy()
    preview = session.preview(Edit("remove", "water", "circle"), refit=True)
    entry = session.remove("water", "circle")
    assert entry.params["proxies"] == [name for name, _ in session.proxies("water")]
    assert {h["concept"] for h in entry.held} == {"water pipe", "water drops"} == {h["concept"] for h in preview.held}
    for name in ("water pipe", "water drops"):
        k = session.concept_id(name)
        assert session.weight[0, k] == 0.0 and session.state.kind[0, k] == Kind.HELD
        assert start[0, k] == 0.0 or name in {h["concept"] for h in entry.held if h["before"] != 0}
    assert session.metrics["groups"]["worst_group_accuracy"] > wga + 0.2
    assert preview.metrics_after == session.metrics  # the what-if is what Apply gives
    assert entry.delta["worst_group_accuracy"] == pytest.approx(session.metrics["groups"]["worst_group_accuracy"] - wga)
    # the remove's refit is faithful where the teacher is right
    right = TRAIN.is_val & (TRAIN.teacher_logits.argmax(1) == TRAIN.labels)
    agree = (session.student.logits(TRAIN.concept_scores[right]).argmax(1) == TRAIN.teacher_logits[right].argmax(1))
    assert agree.mean() >= 0.95


def test_a_released_proxy_is_free_and_the_log_says_so():
    session = TuningSession(TRAIN, STUDENT)
    entry = session.remove("water", "circle", released=["water pipe"])
    assert entry.params["proxies"] == ["water drops"] and entry.params["released"] == ["water pipe"]
    assert session.state.kind[0, session.concept_id("water pipe")] == Kind.FREE
    assert "1 released" in entry.summary


def test_fix_with_labels_is_one_action_and_replays_exactly(tmp_path):
    session = TuningSession(TRAIN, STUDENT)
    session.remove("water", "circle", label_weight=0.5)
    assert len(session.log) == 2 and session.label_weight == 0.5
    session.undo()
    assert session.label_weight == 0.0
    session.redo()
    log = session.export_log(tmp_path / "log.json")
    assert log["version"] == LOG_VERSION
    replayed = TuningSession.replay(TRAIN, tmp_path / "log.json")
    assert replayed.replay_gap == 0.0 and replayed.label_weight == 0.5
    assert [e.held for e in replayed.log] == [e.held for e in session.log]


def test_a_version_2_remove_replays_as_it_was_made_without_proxies():
    session = TuningSession(TRAIN, STUDENT)
    session.remove("water", "circle", proxies=[])
    log = session.export_log()
    log["version"] = 2
    for entry in log["entries"][1:]:
        for key in ("proxies", "released", "label_weight"):
            del entry["params"][key]
    replayed = TuningSession.replay(TRAIN, log)
    assert replayed.replay_gap == 0.0 and not replayed.log[1].held


def test_choosing_groups_later_measures_every_step_again():
    session = TuningSession(TRAIN, STUDENT)
    session.remove("water", "circle")
    assert session.metrics["groups"] is None
    groups = cross(TRAIN.labels_as_classes, TRAIN.class_names, background(TRAIN), "background")
    session.set_groups(groups)
    for entry in session.log:
        assert entry.metrics_after["groups"]["attribute"] == "background"
    assert session.log[1].metrics_before is session.log[0].metrics_after
    direct = TuningSession(TRAIN, STUDENT, groups=groups)
    assert session.log[0].metrics_after == direct.metrics


def test_the_journal_written_after_every_action_appends_and_reads_back_as_the_export(tmp_path, monkeypatch):
    import infincond.tuning.log as log_module
    from infincond.tuning.log import write_journal

    session, memo, path = TuningSession(TRAIN, STUDENT), {}, tmp_path / "log.jsonl"

    def same() -> None:  # read back: the export, its final weights not recorded; and it replays
        write_journal(session, path, memo)
        expected = {**json.loads(json.dumps(session.export_log())), "final": None}
        assert json.loads(json.dumps(read_log(path))) == expected
        assert np.array_equal(TuningSession.replay(TRAIN, path).weight, session.weight)

    session.remove("water", "circle")
    same()
    first, size = path.stat().st_ino, path.stat().st_size
    session.undo()
    same()
    session.down("water", "circle", 2)
    same()
    assert path.stat().st_ino == first and path.stat().st_size > size  # appended, not written again
    assert len(path.read_bytes().splitlines()) == 1 + len(session.log)  # the header, then an entry per line
    # An entry whose metrics were replaced (the groups changed): the file is written afresh.
    session.set_groups(cross(TRAIN.labels_as_classes, TRAIN.class_names, background(TRAIN), "background"))
    same()
    assert path.stat().st_ino != first
    assert read_log(path)["entries"][1]["metrics_after"]["groups"]["attribute"] == "background"
    session = TuningSession(TRAIN, STUDENT)  # another session (as after a widen): nothing kept applies
    session.up("water", "circle", 2)
    same()
    # A crash mid-append leaves a line cut short: it is dropped, the actions before it replay.
    before = session.weight.copy()
    session.undo()
    write_journal(session, path, memo)
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])
    assert len(read_log(path)["entries"]) == len(session.log) - 1
    assert np.array_equal(TuningSession.replay(TRAIN, path).weight, before)
    # An append that fails half-way (a full disk) leaves the file to be written afresh by the next one.
    path.write_bytes(whole)

    def full(target, data: bytes, identity):
        with open(target, "ab") as handle:
            handle.write(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_module, "append_durably", full)
    session.redo()
    with pytest.raises(OSError):
        write_journal(session, path, memo)
    monkeypatch.undo()
    session.down("water", "circle", 2)
    same()
    # A file deleted, or written meanwhile by another tab on the same session: written afresh, not appended to.
    path.unlink()
    session.undo()
    same()
    other, other_memo = TuningSession(TRAIN, STUDENT), {}
    other.up("water", "circle", 3)
    write_journal(other, path, other_memo)
    session.redo()
    same()  # this tab's log, whole: the last writer's
    path.write_bytes(path.read_bytes().replace(b"\n", b"\n{", 1))
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        read_log(path)
    exported = tmp_path / "export.json"  # an exported log must keep its final weights: only a journal has none
    session.export_log(exported)
    exported.write_text(json.dumps({**json.loads(exported.read_text()), "final": None}))
    with pytest.raises(ConfigError, match="final"):
        read_log(exported)


def test_groups_by_concept_and_clear_errors():
    groups = groups_for(TRAIN, None, "concept:water")
    assert "circle · 'water' present" in groups.names and "circle · 'water' absent" in groups.names
    with pytest.raises(ConfigError, match="concept:<a concept>"):
        groups_for(TRAIN, None, "concept:lava")
    with pytest.raises(ConfigError, match="only 'concept:<a concept>' groups"):
        groups_for(TRAIN, None, "background")
    assert groups_for(TRAIN, None, "") is None


def test_a_group_column_that_is_missing_or_incomplete_is_refused(tmp_path):
    from datasets import ClassLabel

    from infincond import DataConfig, ImageSource
    from infincond.groups import column_values
    from infincond.testing import make_shapes_dataset

    dataset = make_shapes_dataset(12).add_column("site", ["a", "b", None] * 4)
    dataset = dataset.add_column("zone", [0, 1, 1, -1] * 3).cast_column("zone", ClassLabel(names=["north", "south"]))
    dataset.save_to_disk(str(tmp_path / "data"))
    source = ImageSource.load(DataConfig(str(tmp_path / "data"), samples=None))
    assert column_values(source, np.arange(2), "shape")
    assert column_values(source, np.array([2, 0, 1]), "zone") == ["south", "north", "south"]  # names, in row order
    with pytest.raises(ConfigError, match=r"'lake' is not a column of the dataset; pass one of \['shape', 'site', "):
        column_values(source, np.arange(12), "lake")
    with pytest.raises(ConfigError, match="'site' has no value for 4 of 12 images \\(rows 2, 5, 8, 11\\)"):
        column_values(source, np.arange(12), "site")
    with pytest.raises(ConfigError, match="'zone' has no value for 3 of 12 images \\(rows 3, 7, 11\\)"):
        column_values(source, np.arange(12), "zone")  # a ClassLabel's -1: no value


def test_the_card_carries_the_worst_group_when_groups_were_given(features):
    from infincond import ConceptStudent
    from infincond.metrics import evaluate_student

    student = distill(features, DistillConfig(nec=2))
    values = np.where(np.arange(len(features.labels)) % 2, "odd", "even")
    groups = cross(features.labels_as_classes, features.class_names, values, "parity")
    grouped = ConceptStudent.from_linear(student, features, None, metrics=evaluate_student(features, student,
                                                                                           groups=groups).to_dict())
    plain = ConceptStudent.from_linear(student, features, None, metrics=evaluate_student(features, student).to_dict())
    kinds = [r.metric_type for r in card_data(grouped).eval_results or []]
    assert "worst_group_accuracy" in kinds
    assert "worst_group_accuracy" not in [r.metric_type for r in card_data(plain).eval_results or []]


def test_cli_audit_and_distill_with_groups_on_the_shapes_world(world, tmp_path, capsys):
    from infincond.cli import main

    common = ["--teacher", world.teacher, "--dataset", world.dataset, "--encoder", world.encoder, "--split", "train",
              "--samples", "0", "--extra-concepts", ",".join(world.concepts), "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "findings.json"
    assert main(["audit", *common, "--nec", "3", "--group-column", "background", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Shortcut audit on the validation rows" in printed and "worst group" in printed
    findings = json.loads(out.read_text())["findings"]
    assert findings and all({"class", "concept", "score"} <= set(f) for f in findings)
    assert [f["score"] for f in findings] == sorted((f["score"] for f in findings), reverse=True)
    assert main(["audit", *common, "--nec", "3", "--audit-split", "test"]) == 0
    assert "split 'test'" in capsys.readouterr().out
    assert main(["distill", *common, "--nec", "3", "--group-column", "background", "--out",
                 str(tmp_path / "student")]) == 0
    assert "per group of class x background" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["groups"]["attribute"] == "background"
    assert main(["distill", *common, "--group-column", "lake", "--out", str(tmp_path / "s2")]) == 2
    assert "'lake' is not a column of the dataset; pass one of ['colour', 'pattern', 'size', 'background', " \
           "'rocks']" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()


def test_an_audit_split_without_labels_is_refused_before_the_distillation(repos, tmp_path, capsys):
    from datasets import DatasetDict

    from infincond.cli import main
    from infincond.testing import make_shapes_dataset

    labelled = make_shapes_dataset(40)
    DatasetDict({"train": labelled, "wild": labelled.remove_columns(["label"])}).save_to_disk(str(tmp_path / "data"))
    args = [
        "audit",
        "--teacher",
        repos["teacher"],
        "--dataset",
        str(tmp_path / "data"),
        "--encoder",
        repos["clip"],
        "--extra-concepts",
        "red,green,blue",
        "--samples",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--nec",
        "1",
    ]
    assert main([*args, "--audit-split", "wild"]) == 2
    message = capsys.readouterr().err
    assert "The split 'wild'" in message and "has no labels among the teacher's classes" in message
    assert "pass a labelled split (CLI: --audit-split)" in message


def test_a_refused_group_choice_changes_nothing_in_the_workspace():
    from infincond.ui import Workspace

    ws = Workspace()
    ws.load_features(TRAIN)
    ws.distill(3, necs=(3,), progress=False)
    ws.set_groups("concept:water")
    before = ws.groups, ws.session.metrics
    for bad in ("concept:lava", "background"):  # an unknown concept; a column without the dataset
        with pytest.raises(ConfigError):
            with ws.transaction():
                ws.set_groups(bad)
        assert (ws.groups, ws.session.metrics) == before
