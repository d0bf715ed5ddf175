import pytest

from infincond import ConceptCorpus, ConfigError
from infincond.concepts.corpus import near_duplicate_mask, normalize_concept

EXPECTED_SOURCES = {"pascal_context", "coco_stuff", "ade20k", "dtd", "colour", "material", "scene", "part"}


def test_builtin_corpus_is_large_distinct_and_sourced():
    corpus = ConceptCorpus.builtin()
    assert len(corpus) >= 500
    normalised = [normalize_concept(c) for c in corpus.concepts]
    assert len(set(normalised)) == len(corpus)
    counts = corpus.source_counts()
    assert EXPECTED_SOURCES <= set(counts)
    assert counts["dtd"] == 47 and counts["ade20k"] >= 140 and counts["coco_stuff"] >= 170
    assert all(src for src in corpus.sources)
    for concept in ("tv monitor", "bicycle", "sofa", "striped", "wood", "beach", "wheel"):
        assert concept in corpus.concepts


def test_deduplication_merges_case_punctuation_and_plurals():
    corpus = ConceptCorpus.from_list(["Car", "cars", "car ", "traffic-light", "traffic_light", "Buses", "bus", "glass"])
    assert corpus.concepts == ("car", "traffic light", "buses", "glass")  # first spelling wins
    merged = ConceptCorpus(("grass", "Grass"), ("ade20k", "coco_stuff")).deduplicated()
    assert merged.concepts == ("grass",) and merged.sources == ("ade20k;coco_stuff",)
    # What was merged is shown: the spellings taken for an earlier concept.
    assert corpus.merged == (("car", "cars"), ("buses", "bus"))  # case, spaces and punctuation are no news


def test_plurals_that_name_another_thing_are_kept_apart():
    corpus = ConceptCorpus.from_list(["glass", "glasses", "wood", "woods", "arm", "arms", "tree", "trees"])
    assert corpus.concepts == ("glass", "glasses", "wood", "woods", "arm", "arms", "tree")
    assert corpus.merged == (("tree", "trees"),)
    assert (corpus + ["cup", "cups"]).merged == (("tree", "trees"), ("cup", "cups"))


def test_user_corpus_from_file_and_template(tmp_path):
    file = tmp_path / "mine.txt"
    file.write_text("# my concepts\nstripes\tmine-src\nspots\n\nstripes\n")
    corpus = ConceptCorpus.from_file(file)
    assert corpus.concepts == ("stripes", "spots")
    assert corpus.sources == ("mine-src;mine", "mine")
    assert corpus.prompts("a photo of {}.") == ["a photo of stripes.", "a photo of spots."]
    with pytest.raises(ConfigError, match="must contain"):
        corpus.prompts("no placeholder")
    with pytest.raises(ConfigError, match="does not exist"):
        ConceptCorpus.from_file(tmp_path / "missing.txt")
    assert ConceptCorpus.resolve(str(file)) == corpus
    assert len(ConceptCorpus.resolve(None)) == len(ConceptCorpus.builtin())


def test_near_duplicate_mask_drops_later_close_embeddings():
    import numpy as np

    emb = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert near_duplicate_mask(emb, 0.99).tolist() == [True, False, True]


def test_adding_a_plain_list_of_concepts():
    corpus = ConceptCorpus.from_list(["water", "grass"], source="world") + ["Water", "rocks", "sand"]
    assert list(corpus.concepts) == ["water", "grass", "rocks", "sand"]
    assert corpus.sources[2] == "user"
