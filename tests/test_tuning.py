"""The tuning engine: edit semantics, constrained refits, label blend, what-if previews, provenance
(undo / redo / jump, export / import / replay), clear errors, and property-based invariants."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from infincond import ConceptStudent, ConfigError, ConstraintError, DistillConfig, distill, evaluate_student
from infincond.testing import planted_features
from infincond.tuning import UNUSED_FRACTION, Edit, Kind, TuningSession
from infincond.tuning.log import LOG_VERSION

FEATURES = planted_features(n=800, k=20, c=3, nec=3, seed=0)
STUDENT = distill(FEATURES, DistillConfig(nec=3))
SMALL = planted_features(n=300, k=10, c=3, nec=2, seed=4)
SMALL_STUDENT = distill(SMALL, DistillConfig(nec=3, max_iter=150))


def session(**kwargs) -> TuningSession:
    return TuningSession(FEATURES, STUDENT, **kwargs)


def used(s: TuningSession, sign: int = 1) -> tuple[str, str, float]:
    """A (concept, class, weight) the student uses with the given sign."""
    c, k = np.argwhere(np.sign(s.weight) == sign)[0]
    return s.concepts[k], s.class_names[c], float(s.weight[c, k])


def assert_holds(s: TuningSession) -> None:
    """Every constraint of the current state holds exactly, and unconstrained weights outside the
    distilled support are 0."""
    lower, upper, w = s.state.lower, s.state.upper, s.weight
    assert np.all(w >= lower) and np.all(w <= upper)
    pinned = lower == upper
    np.testing.assert_array_equal(w[pinned], lower[pinned])
    kind = s.state.kind
    free_outside = (kind == 0) & ~s.support
    assert np.all(w[free_outside] == 0)
    # Each weight's kind agrees with its bounds.
    assert np.all(np.isinf(lower[kind == 0])) and np.all(np.isinf(upper[kind == 0]))
    assert np.all(lower[kind == Kind.REMOVED] == 0) and np.all(upper[kind == Kind.REMOVED] == 0)
    assert np.all(pinned[kind == Kind.LOCKED])
    assert np.all(np.isfinite(lower[kind > 0])) and np.all(np.isfinite(upper[kind > 0]))


# -- edit semantics -----------------------------------------------------------------------------------
def test_up_and_down_hold_the_weight_at_the_scaled_value_and_refit_the_rest():
    s = session()
    concept, cls, w = used(s, 1)
    entry = s.up(concept, cls, factor=3)
    assert s.weight[s.class_id(cls), s.concept_id(concept)] == pytest.approx(3 * w)
    assert entry.changes == [{"concept": concept, "class_name": cls, "before": w, "after": pytest.approx(3 * w),
                              "lower": pytest.approx(3 * w), "upper": pytest.approx(3 * w)}]
    others = np.ones_like(s.weight, dtype=bool)
    others[s.class_id(cls), s.concept_id(concept)] = False
    assert np.abs(s.weight - STUDENT.weight)[others].max() > 1e-3  # the rest refitted around it
    assert_holds(s)
    s.down(concept, cls, factor=2)  # an up/down replaces the previous one, from the current weight
    assert s.constraint(concept, cls)["weight"] == pytest.approx(1.5 * w)
    assert s.constraint(concept, cls)["kind"] == "down"


def test_negative_weights_up_raises_and_down_lowers():
    s = session()
    concept, cls, w = used(s, -1)
    s.up(concept, cls, factor=4)
    assert s.constraint(concept, cls)["weight"] == pytest.approx(w / 4)  # counts less against the class
    s2 = session()
    s2.down(concept, cls, factor=4)
    assert s2.constraint(concept, cls)["weight"] == pytest.approx(w * 4)


def test_unused_concept_gets_a_fraction_of_the_class_typical_weight():
    s = session()
    c = 1
    k = int(np.nonzero(STUDENT.weight[c] == 0)[0][0])
    typical = float(np.median(np.abs(STUDENT.weight[c][STUDENT.weight[c] != 0])))
    preview = s.preview(Edit("up", s.concepts[k], s.class_names[c], 2))
    assert preview.changes[0]["after"] == pytest.approx(2 * UNUSED_FRACTION * typical)
    s.down(s.concepts[k], s.class_names[c], factor=2)
    assert s.weight[c, k] == pytest.approx(-2 * UNUSED_FRACTION * typical)
    assert s.metrics["nec"] > s.log[0].metrics_after["nec"]  # the class now uses one more concept


def test_bounded_mode_keeps_the_interval_free():
    s = session()
    concept, cls, w = used(s, 1)
    s.up(concept, cls, factor=2, bounded=True)
    bounds = s.constraint(concept, cls)
    assert (bounds["lower"], bounds["upper"]) == pytest.approx((w, 2 * w))
    # The objective is unchanged, so its optimum stays at the old weight: the interval's lower end.
    assert bounds["weight"] == pytest.approx(w, rel=0.05)
    s.set_label_weight(1.0)  # another objective: the weight may move, but only inside [w, 2w]
    assert w - 1e-12 <= s.constraint(concept, cls)["weight"] <= 2 * w + 1e-12
    assert_holds(s)


def test_remove_lock_restore_and_concept_for_every_class():
    s = session()
    concept, cls, w = used(s, 1)
    s.remove(concept, cls)
    assert s.constraint(concept, cls) == {"kind": "removed", "lower": 0.0, "upper": 0.0, "weight": 0.0}
    s.restore(concept, cls)
    assert s.constraint(concept, cls)["kind"] == "free" and s.constraint(concept, cls)["weight"] != 0
    other_concept, other_cls, _ = used(s, -1)
    held = float(s.weight[s.class_id(other_cls), s.concept_id(other_concept)])
    s.lock(other_concept, other_cls)
    s.remove(concept)  # every class
    assert np.all(s.weight[:, s.concept_id(concept)] == 0)
    assert s.constraint(other_concept, other_cls)["weight"] == held  # exactly, through the refit
    assert {e["class_name"] for e in s.edits() if e["concept"] == concept} == set(s.class_names)
    s.restore(concept)  # every class it was constrained for
    assert all(e["concept"] != concept for e in s.edits())
    assert_holds(s)


def test_edit_on_every_class_up_tunes_only_the_classes_using_it():
    s = session()
    k = int(np.nonzero((STUDENT.weight != 0).sum(0) == 1)[0][0])
    c = int(np.nonzero(STUDENT.weight[:, k])[0][0])
    entry = s.up(s.concepts[k], None, 2)
    assert [ch["class_name"] for ch in entry.changes] == [s.class_names[c]]


def test_label_blend_pulls_the_student_toward_the_truth():
    # The teacher leans on "concept 0" for class 0; the labels do not.
    s = session()
    base = s.metrics["accuracy"]
    entry = s.set_label_weight(1.0)
    assert s.metrics["accuracy"] > base + 0.03 and entry.delta["accuracy"] > 0.03
    assert s.student.config.label_weight == 1.0
    unlabelled = planted_features(n=200, k=8, c=3, nec=2, labelled=False)
    with pytest.raises(ConfigError, match="no labels"):
        TuningSession(unlabelled, distill(unlabelled, DistillConfig(nec=2))).set_label_weight(0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        s.set_label_weight(1.5)


# -- what-if preview ----------------------------------------------------------------------------------
def test_preview_changes_nothing_and_matches_what_apply_does():
    s = session()
    concept, cls, w = used(s, 1)
    edit = Edit("down", concept, cls, 4)
    quick = s.preview(edit)
    assert not quick.refitted and len(s.log) == 1 and s.weight[s.class_id(cls), s.concept_id(concept)] == w
    # Without a refit, the metrics are those of the student with just this weight changed.
    manual = s.student
    manual.weight[s.class_id(cls), s.concept_id(concept)] = w / 4
    expected = evaluate_student(FEATURES, manual)
    assert quick.metrics_after["fidelity"] == pytest.approx(expected.fidelity)
    assert quick.metrics_after["accuracy"] == pytest.approx(expected.accuracy)
    assert quick.delta["fidelity"] == pytest.approx(expected.fidelity - s.metrics["fidelity"])
    full = s.preview(edit, refit=True)
    entry = s.apply(edit)
    assert full.metrics_after == entry.metrics_after
    assert set(quick.metrics_after["per_class"]) == set(s.class_names)


def test_metrics_on_separate_eval_features():
    test = planted_features(n=400, k=20, c=3, nec=3, seed=0)
    s = session(eval_features=test)
    assert s.metrics["n_images"] == 400
    other = planted_features(n=100, k=12, c=3, nec=2)
    with pytest.raises(ConfigError, match="same concepts"):
        session(eval_features=other)


# -- provenance ---------------------------------------------------------------------------------------
def test_undo_redo_and_jump_restore_states_exactly():
    s = session()
    concept, cls, _ = used(s, 1)
    w0 = s.weight.copy()
    s.remove(concept, cls)
    w1 = s.weight.copy()
    s.set_label_weight(0.5)
    w2 = s.weight.copy()
    s.undo()
    np.testing.assert_array_equal(s.weight, w1)
    s.undo()
    np.testing.assert_array_equal(s.weight, w0)
    assert s.label_weight == 0.0 and s.constraint(concept, cls)["kind"] == "free" and not s.can_undo
    s.redo()
    np.testing.assert_array_equal(s.weight, w1)
    s.up(*used(s, -1)[:2])  # a new action after undo drops the redo
    assert not s.can_redo
    with pytest.raises(ConfigError, match="Nothing to redo"):
        s.redo()
    blend_step = next(e.step for e in s.log if e.action == "label_weight")
    s.jump(blend_step)  # the abandoned branch is still reachable
    np.testing.assert_array_equal(s.weight, w2)
    s.undo()  # undoing a jump returns to where it started
    assert s.log[-1].action == "undo" and s.log[-2].action == "jump"
    assert [e.action for e in s.log] == ["start", "edit", "label_weight", "undo", "undo", "redo", "edit", "jump",
                                         "undo"]
    with pytest.raises(ConfigError, match="no step 99"):
        s.jump(99)
    with pytest.raises(ConfigError, match="Nothing to undo"):
        session().undo()


def test_every_action_records_time_parameters_and_metrics_before_and_after():
    s = session()
    concept, cls, _ = used(s, 1)
    entry = s.down(concept, cls, factor=3)
    assert entry.params == {"action": "down", "concept": concept, "class_name": cls, "factor": 3.0, "bounded": False}
    assert entry.summary == f"down-tune '{concept}' for {cls} x3"
    assert entry.time.endswith("+00:00") and entry.seconds > 0 and entry.refit["iterations"] >= 1
    assert entry.metrics_before == s.log[0].metrics_after and entry.metrics_after == s.metrics
    assert entry.delta["fidelity"] == pytest.approx(entry.metrics_after["fidelity"] - entry.metrics_before["fidelity"])
    per_class = entry.delta["per_class"][cls]
    assert set(per_class) == {"agreement", "accuracy"}


def test_export_import_replay_reproduces_the_final_student(tmp_path):
    s = session()
    concept, cls, _ = used(s, 1)
    s.down(concept, cls, 3)
    s.set_label_weight(0.3)
    s.lock(*used(s, -1)[:2])
    s.undo()
    s.up("concept 19", s.class_names[2], 2)
    s.jump(2)
    path = tmp_path / "log.json"
    exported = s.export_log(path)
    on_disk = json.loads(path.read_text())
    assert on_disk == exported and on_disk["format"] == "infincond-tuning-log"
    replayed = TuningSession.replay(FEATURES, path)
    assert np.max(np.abs(replayed.weight - s.weight)) <= 1e-6
    assert replayed.label_weight == s.label_weight and len(replayed.log) == len(s.log)
    assert [e.summary for e in replayed.log] == [e.summary for e in s.log]
    # A log recorded on other features, or a file that is no log, is refused clearly.
    with pytest.raises(ConfigError, match="other features"):
        TuningSession.replay(SMALL, path)
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="not an InFiConD tuning log"):
        TuningSession.replay(FEATURES, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="Cannot read"):
        TuningSession.replay(FEATURES, tmp_path / "missing.json")
    tampered = json.loads(path.read_text())
    tampered["final"]["weight"][0][0] += 0.5
    with pytest.raises(ConfigError, match="did not reproduce.*largest weight gap is 0.5"):
        TuningSession.replay(FEATURES, tampered)
    lenient = TuningSession.replay(FEATURES, tampered, strict=False)
    assert lenient.replay_gap == pytest.approx(0.5) and replayed.replay_gap <= 1e-6


def test_restore_after_an_up_tune_exports_saves_and_replays(tmp_path):
    # The data-loss bug: a restore's entry held infinite bounds, so export, save, zip and push all failed.
    s = session()
    concept, cls, w = used(s, 1)
    s.up(concept, cls)
    s.restore(concept, cls)
    log = s.export_log(tmp_path / "log.json")
    assert log["version"] == LOG_VERSION
    assert log["entries"][-1]["changes"][0] | {"before": 0, "after": 0} == {
        "concept": concept, "class_name": cls, "before": 0, "after": 0, "lower": None, "upper": None}
    assert log["entries"][1]["changes"][0]["lower"] == pytest.approx(2 * w)  # finite bounds stay numbers
    replayed = TuningSession.replay(FEATURES, tmp_path / "log.json")
    np.testing.assert_allclose(replayed.weight, s.weight, atol=1e-6)
    student = ConceptStudent.from_session(s)
    student.save_pretrained(tmp_path / "student")
    assert json.loads((tmp_path / "student" / "tuning_log.json").read_text())["entries"] == log["entries"]
    s.undo()  # the entry stays in the log, and the student stays saveable
    ConceptStudent.from_session(s).save_pretrained(tmp_path / "student")


def test_every_kind_of_entry_round_trips_through_json():
    s = session()
    concept, cls, _ = used(s, 1)
    other, other_cls, _ = used(s, -1)
    s.up(concept, cls, 3, bounded=True)
    s.down(other, other_cls, 2)
    s.remove(concept)
    s.lock(other, other_cls)
    s.restore(concept)
    s.set_label_weight(0.5)
    s.undo()
    s.redo()
    s.jump(2)
    text = json.dumps(s.export_log(), allow_nan=False)
    data = json.loads(text)
    assert data["entries"] == [json.loads(json.dumps(e.to_dict())) for e in s.log]
    assert {e["action"] for e in data["entries"]} == {"start", "edit", "label_weight", "undo", "redo", "jump"}
    assert {e["params"].get("action") for e in data["entries"] if e["action"] == "edit"} == {
        "up", "down", "remove", "lock", "restore"}
    replayed = TuningSession.replay(FEATURES, data)
    for mine, theirs in zip(replayed.log, s.log, strict=True):
        assert (mine.action, mine.params, mine.summary, mine.state) == (theirs.action, theirs.params, theirs.summary,
                                                                        theirs.state)
        assert [c | {"after": 0} for c in mine.changes] == [c | {"after": 0} for c in theirs.changes]


def test_a_version_1_log_still_replays(tmp_path):
    s = session()
    s.down(*used(s, 1)[:2], 2)
    old = s.export_log()
    old["version"] = 1  # version 1 differs only in not holding unbounded constraints
    replayed = TuningSession.replay(FEATURES, old)
    np.testing.assert_allclose(replayed.weight, s.weight, atol=1e-6)


# -- clear errors -------------------------------------------------------------------------------------
def test_clear_errors():
    s = session()
    concept, cls, _ = used(s, 1)
    with pytest.raises(ConstraintError, match="Unknown concept 'concept 2O'.*Did you mean 'concept 2'"):
        s.remove("concept 2O", cls)
    with pytest.raises(ConstraintError, match=r"Unknown class 'dog'; the classes are \['class 0'"):
        s.remove(concept, "dog")
    for factor, message in ((0, "positive"), (-2, "positive"), (float("nan"), "positive"), (1.0, "greater than 1"),
                            (0.5, "greater than 1")):
        with pytest.raises(ConfigError, match=message):
            Edit("up", concept, cls, factor)
    with pytest.raises(ConfigError, match="up-tune and down-tune only"):
        Edit("remove", concept, cls, 2.0)
    with pytest.raises(ConfigError, match="Unknown edit action"):
        Edit("boost", concept, cls)
    s.remove(concept, cls)
    with pytest.raises(ConstraintError, match="Contradictory edit.*removed.*Restore it first"):
        s.up(concept, cls)
    s.restore(concept, cls)
    s.lock(concept, cls)
    with pytest.raises(ConstraintError, match="locked"):
        s.remove(concept)  # every class, one of them locked
    with pytest.raises(ConstraintError, match="no constraint to restore"):
        s.restore("concept 19")
    unused = s.concepts[int(np.nonzero((STUDENT.weight == 0).all(0))[0][0])]
    with pytest.raises(ConstraintError, match="No class uses"):
        s.up(unused)
    # A failed edit changes nothing and records nothing.
    assert [e.action for e in s.log] == ["start", "edit", "edit", "edit"]
    # Case and spacing are forgiven.
    assert s.concept_id(concept.upper() + " ") == s.concept_id(concept)


def test_history_is_stored_sparsely_and_rebuilt_exactly():
    wide = planted_features(n=300, k=400, c=50, nec=3, seed=1)
    student = distill(wide, DistillConfig(nec=3, max_iter=100))
    s = TuningSession(wide, student)
    for _ in range(3):
        concept, cls, _ = used(s, 1)
        s.down(concept, cls, 2)
    s.undo()
    past = [state for i, state in enumerate(s.states) if i != s.cursor]
    dense = 4 * 50 * 400 * 8  # weights, two bounds and kinds as dense float64
    assert len(past) == 3 and all(state.nbytes < dense / 20 for state in past)
    s.jump(0)
    np.testing.assert_array_equal(s.weight, student.weight)
    np.testing.assert_array_equal(s.state.bias, student.bias)


def test_states_left_last_keep_their_reports_and_drop_their_arrays():
    from infincond.tuning.history import WARM_STATES

    s = TuningSession(FEATURES, STUDENT)
    reports = []
    for _ in range(WARM_STATES + 2):  # a report derived on every state while it is current
        reports.append(object())
        s.state.cache.update(report=reports[-1], influence=np.ones(s.weight.shape))
        concept, cls, _ = used(s, 1)
        s.down(concept, cls, 2)
    left = s.states[:-1]
    # The WARM_STATES left last keep their reports (not their arrays: rebuilt from the weights); older ones
    # keep nothing.
    assert [state.cache for state in left[-WARM_STATES:]] == [{"report": r} for r in reports[-WARM_STATES:]]
    assert all(state.cache == {} for state in left[:-WARM_STATES])
    s.undo()
    assert s.state is left[-1] and s.state.cache["report"] is reports[-1]


def test_session_rejects_a_student_of_other_shape():
    with pytest.raises(ConfigError, match=r"weights \(3, 20\); the features need \(3, 10\)"):
        TuningSession(SMALL, STUDENT)


# -- real models --------------------------------------------------------------------------------------
def test_session_over_real_features_and_concept_student(features):
    student = distill(features, DistillConfig(nec=3))
    s = TuningSession(features, student)
    concept, cls, w = used(s, 1)
    s.down(concept, cls, 2)
    assert s.constraint(concept, cls)["weight"] == pytest.approx(w / 2)
    student = ConceptStudent.from_session(s)
    assert student.provenance["tuning"][-1]["summary"] == f"down-tune '{concept}' for {cls} x2"
    np.testing.assert_array_equal(student.linear.weight, s.weight)


# -- properties ---------------------------------------------------------------------------------------
ACTIONS = st.one_of(
    st.tuples(st.sampled_from(["up", "down"]), st.integers(0, 9), st.one_of(st.none(), st.integers(0, 2)),
              st.floats(1.1, 5.0), st.booleans()),
    st.tuples(st.sampled_from(["remove", "lock", "restore"]), st.integers(0, 9),
              st.one_of(st.none(), st.integers(0, 2)), st.none(), st.just(False)),
    st.tuples(st.sampled_from(["undo", "redo"]), st.none(), st.none(), st.none(), st.just(False)),
    st.tuples(st.just("alpha"), st.none(), st.none(), st.sampled_from([0.0, 0.25, 1.0]), st.just(False)),
)


@given(st.lists(ACTIONS, min_size=1, max_size=7))
@example([("up", 0, 0, 2.0, False), ("restore", 0, 0, None, False)])  # drawn once in CI: the restore's log had inf
def test_any_sequence_of_actions_keeps_constraints_undo_exact_and_replay_equal(actions):
    s = TuningSession(SMALL, SMALL_STUDENT)
    for name, k, c, value, bounded in actions:
        before = (s.weight.copy(), s.state.lower.copy(), s.state.upper.copy(), s.label_weight)
        try:
            if name in ("undo", "redo"):
                getattr(s, name)()
            elif name == "alpha":
                s.set_label_weight(value)
            else:
                s.apply(Edit(name, s.concepts[k], None if c is None else s.class_names[c], value, bounded))
        except (ConstraintError, ConfigError):
            # A refused action leaves the state as it was.
            np.testing.assert_array_equal(s.weight, before[0])
            continue
        assert_holds(s)
        if name not in ("undo", "redo"):
            s.undo()
            np.testing.assert_array_equal(s.weight, before[0])
            np.testing.assert_array_equal(s.state.lower, before[1])
            np.testing.assert_array_equal(s.state.upper, before[2])
            assert s.label_weight == before[3]
            s.redo()
            assert_holds(s)
    replayed = TuningSession.replay(SMALL, json.loads(json.dumps(s.export_log())))
    assert np.max(np.abs(replayed.weight - s.weight)) <= 1e-6


def test_a_session_moves_onto_features_with_more_concepts():
    from dataclasses import replace as dc_replace

    s = session()
    concept, cls, _ = used(s, 1)
    s.down(concept, cls, 2)
    s.set_label_weight(0.25)
    s.undo()
    rng = np.random.default_rng(7)
    extra = rng.random((len(FEATURES.is_val), 2)).astype(np.float32)
    wider_features = dc_replace(
        FEATURES, concept_scores=np.concatenate([FEATURES.concept_scores, extra], 1),
        best_region=np.concatenate([FEATURES.best_region, np.zeros_like(extra, dtype=np.int16)], 1),
        concept_embeddings=np.concatenate([FEATURES.concept_embeddings, rng.normal(size=(2, 8)).astype(np.float32)]),
        concepts=[*FEATURES.concepts, "new a", "new b"], concept_sources=[*FEATURES.concept_sources, "typed", "typed"],
        provenance={"fingerprint": "planted-wider"})
    wider = s.widen(wider_features)
    np.testing.assert_allclose(wider.weight[:, :-2], s.weight, atol=1e-9)
    assert not wider.weight[:, -2:].any() and [e.summary for e in wider.log] == [e.summary for e in s.log]
    wider.up("new a", cls)  # a concept the student does not use yet, now tunable
    assert wider.constraint("new a", cls)["weight"] > 0 and wider.metrics["nec"] > s.metrics["nec"]
