import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infincond import (
    ConfigError,
    ConstraintError,
    Constraints,
    ConvergenceWarning,
    DistillConfig,
    distill,
    evaluate,
    fit,
)
from infincond.distill import Refitter, fit_sweep
from infincond.testing import planted_problem

SCORES, LOGITS, TRUE_WEIGHT = planted_problem(n=1500, k=40, c=4, nec=3, seed=2)
TRAIN, VAL = slice(0, 1200), slice(1200, None)


def fidelity(student, rows=VAL):
    return float(np.mean(student.logits(SCORES[rows]).argmax(1) == LOGITS[rows].argmax(1)))


def test_default_meets_the_nec_target_and_mimics_the_teacher():
    student = fit(SCORES[TRAIN], LOGITS[TRAIN], DistillConfig(nec=3))
    assert student.nec_per_class.tolist() == [3, 3, 3, 3]
    assert fidelity(student) >= 0.97
    # The planted support is what the student found.
    assert ((student.weight != 0) == (TRUE_WEIGHT != 0)).mean() >= 0.95
    loose = fit(SCORES[TRAIN], LOGITS[TRAIN], DistillConfig(nec=1))
    assert loose.nec_per_class.max() == 1 and fidelity(loose) < fidelity(student)


def test_fixed_l1_without_nec_and_temperature():
    student = fit(SCORES[TRAIN], LOGITS[TRAIN], DistillConfig(nec=None, l1=1e-3, temperature=2.0))
    assert 0 < student.nec < 40 and fidelity(student) >= 0.9


def test_seed_paper_baseline_is_an_ensemble_of_twenty():
    config = DistillConfig(method="bce_ensemble", max_iter=150)
    student = fit(SCORES[TRAIN], LOGITS[TRAIN], config)
    assert config.members == 20 and config.l1_strength == 1e-4
    assert student.weight_std.shape == student.weight.shape and (student.weight_std > 0).any()
    assert fidelity(student) >= 0.8


def test_bootstrap_ensemble_keeps_nec_and_reports_spread():
    student = fit(SCORES[TRAIN], LOGITS[TRAIN], DistillConfig(nec=3, ensemble=5))
    assert student.nec_per_class.max() <= 3
    assert student.weight_std.shape == (4, 40)
    assert (student.weight_std[student.weight == 0] == 0).all() and (student.weight_std > 0).any()


def test_warm_started_refit_keeps_support_and_standardisation():
    base = fit(SCORES[TRAIN], LOGITS[TRAIN], DistillConfig(nec=3))
    constraints = Constraints.free(4, 40)
    c, k = np.argwhere(base.weight != 0)[0]
    constraints.lower[c, k] = constraints.upper[c, k] = 0.0
    refit = fit(SCORES[TRAIN], LOGITS[TRAIN], DistillConfig(nec=3), constraints, init=base)
    assert refit.weight[c, k] == 0
    assert set(map(tuple, np.argwhere(refit.weight != 0))) <= set(map(tuple, np.argwhere(base.weight != 0)))
    np.testing.assert_array_equal(refit.score_mean, base.score_mean)


def test_contradictory_constraints_and_bad_settings_are_clear_errors():
    constraints = Constraints.free(4, 40)
    constraints.lower[1, 2], constraints.upper[1, 2] = 1.0, 0.5
    with pytest.raises(ConstraintError, match="class 1, concept 2"):
        fit(SCORES, LOGITS, DistillConfig(), constraints)
    with pytest.raises(ConstraintError, match="shape"):
        fit(SCORES, LOGITS, DistillConfig(), Constraints.free(3, 40))
    with pytest.raises(ConfigError):
        DistillConfig(nec=0)
    with pytest.raises(ConfigError):
        DistillConfig(method="svm")
    with pytest.raises(ConfigError, match="must be"):
        fit(SCORES[:, 0], LOGITS)


bounds = st.tuples(st.integers(0, 3), st.integers(0, 39), st.sampled_from(["fix", "lower", "upper", "box"]),
                   st.floats(-2, 2, allow_nan=False), st.floats(0, 1.5, allow_nan=False))


@given(st.lists(bounds, max_size=8), st.sampled_from(["kd", "bce_ensemble"]), st.sampled_from([None, 2, 4]))
def test_constraints_always_hold_exactly(edits, method, nec):
    constraints = Constraints.free(4, 40)
    for c, k, kind, value, width in edits:
        lo, hi = {"fix": (value, value), "lower": (value, np.inf), "upper": (-np.inf, value),
                  "box": (value, value + width)}[kind]
        constraints.lower[c, k], constraints.upper[c, k] = lo, hi
    config = DistillConfig(method=method, nec=nec, ensemble=2, max_iter=60, path_iter=20)
    student = fit(SCORES[:400], LOGITS[:400], config, constraints)
    assert constraints.holds(student.weight)
    fixed = constraints.fixed
    np.testing.assert_array_equal(student.weight[fixed], constraints.lower[fixed])
    if method == "kd" and nec is not None:
        free_count = (student.weight != 0) & ~constraints.forced_nonzero
        assert (free_count.sum(1) <= nec).all()


def test_distill_uses_the_training_split(features):
    student = distill(features, DistillConfig(nec=2))
    assert student.info["n_train"] == int((~features.is_val).sum())
    metrics = evaluate(
        student.logits(features.concept_scores[features.is_val]),
        features.teacher_logits[features.is_val],
        features.labels_as_classes[features.is_val],
        features.image_ids[features.is_val],
        features.class_names,
        student.nec_per_class,
    )
    assert metrics.n_images == int(features.is_val.sum()) and metrics.nec <= 2


def test_the_solver_and_the_path_say_when_they_stop_short():
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"):
        student = fit(SCORES, LOGITS, DistillConfig(nec=3, max_iter=3))
    assert student.nec_per_class.tolist() == [3, 3, 3, 3]  # still the NEC asked for
    # Class 0 may use only two concepts: every other weight of its row is held at 0.
    constraints = Constraints.free(4, 40)
    constraints.lower[0, 2:] = constraints.upper[0, 2:] = 0.0
    with pytest.warns(ConvergenceWarning, match="short of the NEC target 3"):
        short = fit(SCORES, LOGITS, DistillConfig(nec=3), constraints)
    assert short.nec_per_class[0] <= 2 and short.nec_per_class[1:].tolist() == [3, 3, 3]


def test_one_refit_serves_fit_and_tuning():
    # fit's final refit is the Refitter's: refitting the fitted student on its own support changes nothing.
    student = fit(SCORES, LOGITS, DistillConfig(nec=3))
    refitter = Refitter.for_student(SCORES, LOGITS, student)
    weight, bias, info = refitter.refit(student.weight, student.bias, Constraints.free(4, 40), student.weight != 0)
    assert info["converged"] and np.abs(weight - student.weight).max() < 1e-3


def test_one_path_serves_a_whole_sparsity_sweep():
    students = fit_sweep(SCORES, LOGITS, [3, 1, 2, 2])
    assert [s.config.nec for s in students] == [1, 2, 3]
    for student in students:  # each equals the target's own fit
        alone = fit(SCORES, LOGITS, DistillConfig(nec=student.config.nec))
        np.testing.assert_allclose(student.weight, alone.weight, atol=1e-6)
        np.testing.assert_allclose(student.bias, alone.bias, atol=1e-6)
    assert [s.nec for s in students] == [1, 2, 3]
