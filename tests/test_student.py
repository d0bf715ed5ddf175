import json

import numpy as np
import pytest

from infincond import ConceptStudent, DistillConfig, LoadError, distill


@pytest.fixture(scope="module")
def student(features, encoder):
    linear = distill(features, DistillConfig(nec=3))
    student = ConceptStudent.from_linear(linear, features, encoder)
    return linear, student


def test_predictions_from_raw_images_match_the_feature_pipeline(student, features, source):
    linear, model = student
    positions = np.arange(10)
    preds = model.predict(source.images(positions))
    np.testing.assert_allclose(preds.logits, linear.logits(features.concept_scores[positions]), rtol=1e-4, atol=1e-5)
    assert preds.class_names == [features.class_names[i] for i in preds.class_ids]
    np.testing.assert_allclose(preds.probs.sum(1), 1.0)


def test_save_and_load_round_trip_gives_identical_predictions(student, source, tmp_path):
    _, model = student
    model.save_pretrained(tmp_path / "student")
    files = {p.name for p in (tmp_path / "student").iterdir()}
    assert {"model.safetensors", "config.json"} <= files and "concepts.json" not in files  # one copy of the concepts
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["concepts"] == model.concepts and config["encoder"]["repo_id"] == model.encoder_info["repo_id"]
    loaded = ConceptStudent.from_pretrained(str(tmp_path / "student"))  # loads the encoder from its recorded path
    assert loaded.encoder.model.text_model is None  # only the vision tower is needed
    images = source.images(range(12))
    np.testing.assert_array_equal(loaded.predict(images).logits, model.predict(images).logits)
    for name in ("weight", "bias", "score_mean", "score_std"):
        np.testing.assert_array_equal(getattr(loaded.linear, name), getattr(model.linear, name))
    np.testing.assert_array_equal(loaded.concept_embeddings, model.concept_embeddings)


def test_loading_is_strict(student, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, model = student
    folder = tmp_path / "broken"
    model.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    del tensors["score_std"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(LoadError, match="weights do not match.*score_std"):
        ConceptStudent.from_pretrained(str(folder))


def test_explain_lists_top_concepts_with_regions(student, source):
    _, model = student
    image = source.images([4])[0]
    explanation = model.explain(image, top_k=2)
    assert explanation.class_id == int(model.predict([image]).class_ids[0])
    assert 0 < len(explanation.contributions) <= 2
    contributions = [abs(c.contribution) for c in explanation.contributions]
    assert contributions == sorted(contributions, reverse=True)
    weights = model.linear.weight[explanation.class_id]
    for item in explanation.contributions:
        k = model.concepts.index(item.concept)
        assert item.weight == weights[k] != 0
        x0, y0, x1, y1 = item.box_on(image.size)
        assert 0 <= x0 < x1 <= image.size[0] and 0 <= y0 < y1 <= image.size[1]


def test_saving_again_into_a_folder_leaves_nothing_of_the_previous_student(student, features, tmp_path):
    from infincond.tuning import TuningSession

    linear, model = student
    tuned = TuningSession(features, linear)
    c, k = np.argwhere(linear.weight != 0)[0]
    tuned.remove(features.concepts[k], features.class_names[c])
    ConceptStudent.from_session(tuned).save_pretrained(tmp_path)
    assert "remove" in (tmp_path / "README.md").read_text() and (tmp_path / "tuning_log.json").exists()
    model.save_pretrained(tmp_path)  # the untuned student, without metrics or log
    assert not (tmp_path / "tuning_log.json").exists() and not (tmp_path / "metrics.json").exists()
    assert "None: this is the distilled student as fitted." in (tmp_path / "README.md").read_text()
    loaded = ConceptStudent.from_pretrained(str(tmp_path))
    assert loaded.tuning_log is None and loaded.metrics is None
