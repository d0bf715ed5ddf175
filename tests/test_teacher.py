import numpy as np
import pytest

from infincond import LoadError, Teacher
from infincond.teacher import resolve_class_names
from infincond.testing import build_tiny_teacher

from .conftest import CLASSES


@pytest.mark.parametrize("arch", ["vit", "resnet", "convnext"])
def test_teachers_of_several_architectures_give_logits(tmp_path, arch, source):
    path = build_tiny_teacher(tmp_path / arch, CLASSES, arch=arch)
    teacher = Teacher.from_pretrained(str(path), device="cpu")
    logits = teacher.logits(source.images([0, 1, 2, 3]))
    assert logits.shape == (4, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert teacher.class_names == list(CLASSES)
    assert teacher.revision.startswith("local-")


def test_generic_label_names_fall_back_to_the_dataset(tmp_path):
    path = build_tiny_teacher(tmp_path / "generic", CLASSES, generic_labels=True)
    assert Teacher.from_pretrained(str(path)).class_names == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert Teacher.from_pretrained(str(path), dataset_label_names=["x", "y", "z"]).class_names == ["x", "y", "z"]
    # A dataset with another number of classes cannot name the teacher's outputs.
    assert resolve_class_names({0: "LABEL_0", 1: "LABEL_1"}, 2, ["a", "b", "c"]) == ["LABEL_0", "LABEL_1"]
    assert resolve_class_names({0: "cat", 1: "dog"}, 2, ["x", "y"]) == ["cat", "dog"]


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(LoadError, match="Could not load the teacher .*Check the local path"):
        Teacher.from_pretrained(str(tmp_path))


def test_loading_wraps_what_a_bad_repo_causes_and_lets_bugs_surface(repos, monkeypatch):
    from transformers import AutoModelForImageClassification

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a loader")

    monkeypatch.setattr(AutoModelForImageClassification, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="a bug in a loader"):  # not disguised as "check the repo id"
        Teacher.from_pretrained(repos["teacher"])
