import numpy as np
import pytest

from infincond import ConceptCorpus, ExtractConfig, FeatureSet, extract_features
from infincond.features import map_labels


def test_feature_set_contents(features, source, corpus):
    n, k = len(source), len(corpus)
    assert features.concept_scores.shape == (n, k) and features.teacher_logits.shape == (n, 3)
    assert (features.concept_scores >= 0).all() and (features.concept_scores <= 1).all()
    assert features.best_region.max() < len(features.region_boxes)
    assert np.array_equal(features.image_ids, source.image_ids)
    assert np.array_equal(features.labels, source.labels)
    assert features.label_to_class.tolist() == [0, 1, 2]
    assert features.provenance["extract"]["template"] == "a photo of {}."


def test_scores_match_an_independent_computation(features, source, encoder, corpus):
    images = source.images([7, 8])
    regions = encoder.encode_regions(images).embeddings.half().float().numpy()  # presence is on fp16 regions
    text = encoder.encode_text(corpus.prompts()).numpy()
    expected = np.maximum(np.einsum("brd,kd->bkr", regions, text).max(-1), 0)
    np.testing.assert_allclose(features.concept_scores[[7, 8]], expected, atol=1e-5)


def test_second_run_loads_from_cache_without_recomputing(source, teacher, encoder, corpus, tmp_path, monkeypatch):
    first = extract_features(source, teacher, encoder, corpus, cache_dir=tmp_path, progress=False)
    calls = []
    monkeypatch.setattr(encoder, "regions_from_pixels", lambda pixels: calls.append(len(pixels)) or 1 / 0)
    monkeypatch.setattr(teacher, "logits_from_pixels", lambda pixels: 1 / 0)
    again = extract_features(source, teacher, encoder, corpus, cache_dir=tmp_path, progress=False)
    assert calls == []
    np.testing.assert_array_equal(first.concept_scores, again.concept_scores)
    assert again.fingerprint == first.fingerprint
    # Another corpus or template is another fingerprint, hence a recomputation.
    with pytest.raises(ZeroDivisionError):
        extract_features(source, teacher, encoder, ConceptCorpus.from_list(["red", "dog"]), cache_dir=tmp_path,
                         progress=False)
    with pytest.raises(ZeroDivisionError):
        extract_features(source, teacher, encoder, corpus, ExtractConfig(template="{}"), cache_dir=tmp_path,
                         progress=False)


def test_save_load_round_trip(features, tmp_path):
    loaded = FeatureSet.load(features.save(tmp_path / "fs"))
    for name in ("concept_scores", "teacher_logits", "labels", "is_val", "concept_embeddings", "region_boxes"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(features, name))
    assert loaded.concepts == features.concepts and loaded.provenance == features.provenance


def test_label_names_map_onto_teacher_classes():
    assert map_labels(["Tv_Monitor", "cat", "zebra"], ["cat", "tv monitor"]).tolist() == [1, 0, -1]
    assert map_labels(None, ["cat"]) is None
