import numpy as np
from scipy.special import rel_entr, softmax
from sklearn.metrics import confusion_matrix, precision_score, recall_score

from infincond import evaluate


def test_metrics_match_an_independent_computation():
    rng = np.random.default_rng(0)
    teacher_logits = rng.normal(size=(300, 4)) * 2
    student_logits = teacher_logits + rng.normal(size=(300, 4)) * 1.5
    labels = np.where(rng.random(300) < 0.8, teacher_logits.argmax(1), rng.integers(0, 4, 300))
    labels[:30] = -1  # unlabelled or not in the teacher's label space
    ids = np.arange(1000, 1300)
    m = evaluate(student_logits, teacher_logits, labels, ids, ["a", "b", "c", "d"], np.array([2, 3, 1, 4]))

    t, s = teacher_logits.argmax(1), student_logits.argmax(1)
    assert m.fidelity == np.mean(t == s)
    np.testing.assert_allclose(m.kl, rel_entr(softmax(teacher_logits, 1), softmax(student_logits, 1)).sum(1).mean())
    np.testing.assert_array_equal(m.confusion, confusion_matrix(t, s, labels=range(4)))
    np.testing.assert_allclose(m.precision, precision_score(t, s, average=None, labels=range(4)))
    np.testing.assert_allclose(m.agreement, recall_score(t, s, average=None, labels=range(4)))
    known = labels >= 0
    assert m.n_labelled == 270
    assert m.accuracy == np.mean(s[known] == labels[known])
    assert m.teacher_accuracy == np.mean(t[known] == labels[known])
    np.testing.assert_allclose(m.teacher_class_accuracy,
                               recall_score(labels[known], t[known], average=None, labels=range(4)))
    np.testing.assert_array_equal(m.disagreement_ids, ids[t != s])
    assert m.nec == 2.5
    summary = m.to_dict()  # the one dictionary shape: headline numbers and per class, JSON-ready
    assert summary["n_disagreements"] == int((t != s).sum()) and summary["accuracy"] == m.accuracy
    assert summary["per_class"]["b"] == {"agreement": m.agreement[1], "accuracy": m.class_accuracy[1]}


def test_no_labels_gives_no_accuracy_and_nan_per_class():
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    m = evaluate(logits, logits, None, np.array([5, 6]), ["x", "y"], np.array([1, 1]))
    assert m.fidelity == 1.0 and abs(m.kl) < 1e-12
    assert m.accuracy is None and m.teacher_accuracy is None
    assert np.isnan(m.class_accuracy).all()
    assert [v["accuracy"] for v in m.to_dict()["per_class"].values()] == [None, None]
