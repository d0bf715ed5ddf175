"""The model card: its metadata and each field of its text come from the student (the card is rendered
from the package's template by huggingface_hub's ModelCard.from_template)."""

from __future__ import annotations

import re

import numpy as np
from huggingface_hub import ModelCard

from infincond import ConceptStudent, DistillConfig, distill
from infincond.card import StudentCardData, card_data, model_card, top_concepts
from infincond.tuning import TuningSession


def test_card_data_field_by_field(features, encoder):
    linear = distill(features, DistillConfig(nec=2, ensemble=3))
    session = TuningSession(features, linear)
    c, k = np.argwhere(linear.weight != 0)[0]
    session.remove(features.concepts[k], features.class_names[c], proxies=[])  # that weight alone
    student = ConceptStudent.from_session(session, encoder)
    data = card_data(student, "alice/shapes-student")
    assert isinstance(data, StudentCardData)
    meta = data.to_dict()
    assert "content" not in meta  # the text's fields stay out of the YAML
    assert meta["library_name"] == "infincond" and meta["pipeline_tag"] == "image-classification"
    assert meta["model-index"][0]["name"] == "shapes-student" and meta["metrics"] == ["accuracy"]
    content = data.content
    assert content["repo_id"] == "alice/shapes-student" and content["n_concepts"] == len(features.concepts)
    assert (content["method"].startswith("kd: fit the teacher's outputs (temperature 1)")
            and "2 concepts" in content["method"])
    fidelity = dict(content["results"])["Fidelity (agreement with the teacher)"]
    assert abs(percent_of(fidelity) - session.metrics["fidelity"]) <= 0.0005  # read back, within its rounding
    assert [row["name"] for row in content["per_class"]] == features.class_names
    # The edit, read back: its step and summary, and the fidelity before and after it.
    (edit,) = content["edits"]
    step, rest = edit.split(". ", 1)
    assert int(step) == 1 and rest.startswith(session.log[1].summary)
    before, after = (percent_of(v) for v in re.findall(r"(\d+\.\d)%", rest))
    assert abs(before - session.log[1].metrics_before["fidelity"]) <= 0.0005
    assert abs(after - session.log[1].metrics_after["fidelity"]) <= 0.0005
    # The top-concepts table, read back: each class's strongest concepts, strongest first, with their weights
    # and bootstrap spread as the student holds them.
    spread = student.linear.weight_std
    assert content["has_spread"] and spread is not None
    for c, row in enumerate(top_concepts(student)):
        shown = re.findall(r"(.+?) \(([+-]\d+\.\d\d) ± (\d+\.\d\d)\)(?:, |$)", row["concepts"])
        weights = student.linear.weight[c]
        used = np.count_nonzero(weights)
        assert len(shown) == min(5, used) and (used or row["concepts"] == "(none)")
        magnitudes = [abs(float(w)) for _, w, _ in shown]
        assert magnitudes == sorted(magnitudes, reverse=True)
        for name, w, sd in shown:
            k = features.concepts.index(name)
            assert abs(float(w) - weights[k]) <= 0.005 and abs(float(sd) - spread[c, k]) <= 0.005


def percent_of(text: str) -> float:
    """"93.5%" as 0.935."""
    return float(text.rstrip("%")) / 100


def test_the_rendered_card_parses_and_shows_every_section(features, encoder, tmp_path):
    student = ConceptStudent.from_linear(distill(features, DistillConfig(nec=2)), features, encoder)
    card = model_card(student)
    reloaded = ModelCard(str(card))
    assert reloaded.data.library_name == "infincond"
    text = reloaded.text
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# infincond-student", "## How it was distilled", "## Results", "## Top concepts per class",
                        "## Edits applied", "## Usage", "## Limitations"]
    assert "(No metrics were recorded with this student.)" in text  # none were passed
    assert "None: this is the distilled student as fitted." in text
    assert "| class | concepts (weight on standardised presence) |" in text  # no ensemble: no spread
    assert 'ConceptStudent.from_pretrained("path/to/student")' in text
    assert "\n\n\n" not in text  # the template leaves no stray blank lines
