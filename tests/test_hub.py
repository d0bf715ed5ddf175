"""The Hub round trip over real HTTP, against the local Hub-compatible server (the `hub` fixture): a teacher,
an encoder and a dataset uploaded there load by repo id; a tuned student pushed there loads back with
`from_pretrained` and predicts exactly as before; its card parses with its metadata; privacy, tokens and
errors behave as on the Hub."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from infincond import (
    ConceptCorpus,
    ConceptEncoder,
    ConceptStudent,
    DataConfig,
    DistillConfig,
    ImageSource,
    Teacher,
    distill,
    extract_features,
)
from infincond.errors import HubError
from infincond.testing import make_shapes_dataset
from infincond.tuning import TuningSession

from .conftest import CLASSES, CONCEPTS, HUB_TOKENS

ALICE, BOB, ALICE_READ = "hf_alice_write_token", "hf_bob_write_token", "hf_alice_read_token"
assert set(HUB_TOKENS) == {ALICE, BOB, ALICE_READ}


@pytest.fixture(scope="module")
def hub_world(hub, repos):
    """The tiny teacher and encoder uploaded as model repos and a tiny dataset pushed with `datasets`,
    then loaded back by repo id through the Foundation loaders; a tuned student on their features."""
    api = HfApi(token=ALICE)
    for name in ("teacher", "clip"):
        api.create_repo(f"alice/tiny-{name}")
        api.upload_folder(repo_id=f"alice/tiny-{name}", folder_path=repos[name])
    make_shapes_dataset(80, classes=CLASSES, seed=3).push_to_hub("alice/shapes", token=ALICE)
    source = ImageSource.load(DataConfig("alice/shapes", samples=80, seed=0))
    teacher = Teacher.from_pretrained("alice/tiny-teacher", dataset_label_names=source.label_names)
    encoder = ConceptEncoder.from_pretrained("alice/tiny-clip")
    features = extract_features(source, teacher, encoder, ConceptCorpus.from_list(CONCEPTS), cache_dir=False,
                                progress=False)
    session = TuningSession(features, distill(features, DistillConfig(nec=3)))
    c, k = np.argwhere(session.student.weight != 0)[0]
    session.down(features.concepts[k], features.class_names[c], 2.0)
    return {"source": source, "teacher": teacher, "encoder": encoder, "features": features, "session": session}


def test_repos_on_the_server_load_by_repo_id(hub_world, hub):
    encoder_commit = HfApi().model_info("alice/tiny-clip").sha
    assert hub_world["encoder"].repo_id == "alice/tiny-clip" and hub_world["encoder"].revision == encoder_commit
    assert hub_world["teacher"].revision == HfApi().model_info("alice/tiny-teacher").sha
    assert hub_world["source"].describe()["dataset"] == "alice/shapes" and len(hub_world["source"]) == 80
    assert hub_world["features"].class_names == list(CLASSES)


def test_push_then_from_pretrained_predicts_identically(hub_world, hub, tmp_path):
    session, encoder = hub_world["session"], hub_world["encoder"]
    local = ConceptStudent.from_session(session, encoder)
    api = HfApi(token=ALICE)
    # The repo already holds a file of the user's: pushing adds a commit and keeps it.
    api.create_repo("alice/student")
    api.upload_file(path_or_fileobj=b"my notes", path_in_repo="NOTES.md", repo_id="alice/student")
    info = local.push_to_hub("alice/student", token=ALICE)
    assert info.repo_url.repo_id == "alice/student"
    assert [c.title for c in api.list_repo_commits("alice/student")][:1] == ["Push an InFiConD student"]
    files = set(api.list_repo_files("alice/student"))
    assert files >= {"NOTES.md", "model.safetensors", "config.json", "metrics.json", "tuning_log.json", "README.md"}
    loaded = ConceptStudent.from_pretrained("alice/student", cache_dir=tmp_path / "hf")
    assert loaded.encoder_info["repo_id"] == "alice/tiny-clip"
    assert loaded.encoder_info["revision"] == HfApi().model_info("alice/tiny-clip").sha  # the encoder's commit
    assert loaded.tuning_log == json.loads(json.dumps(session.export_log()))
    assert loaded.metrics["fidelity"] == pytest.approx(session.metrics["fidelity"])
    images = hub_world["source"].images(range(12))
    expected, got = local.predict(images), loaded.predict(images)  # `loaded` fetches its encoder by repo id
    np.testing.assert_array_equal(got.class_ids, expected.class_ids)
    np.testing.assert_allclose(got.logits, expected.logits, rtol=0, atol=1e-9)
    np.testing.assert_allclose(loaded.linear.weight, session.weight)
    # Pushing another student is one more commit, and nothing is lost. (Pushing the same student again
    # would change no file: huggingface_hub then makes no commit at all, as on the Hub.)
    features = hub_world["features"]
    other = ConceptStudent.from_session(TuningSession(features, distill(features, DistillConfig(nec=2))), encoder)
    other.push_to_hub("alice/student", token=ALICE, commit_message="again")
    assert [c.title for c in api.list_repo_commits("alice/student")][:2] == ["again", "Push an InFiConD student"]
    assert set(api.list_repo_files("alice/student")) == files


def test_the_model_card_parses_with_its_metadata_tables_and_snippet(hub_world, hub):
    session = hub_world["session"]
    ConceptStudent.from_session(session, hub_world["encoder"]).push_to_hub("alice/card-student", token=ALICE)
    card = ModelCard.load(hf_hub_download("alice/card-student", "README.md"))
    data = card.data.to_dict()
    assert data["library_name"] == "infincond" and data["pipeline_tag"] == "image-classification"
    assert data["base_model"] == "alice/tiny-clip" and data["datasets"] == ["alice/shapes"]
    assert "infincond" in data["tags"]
    [result] = data["model-index"][0]["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["type"] == "alice/shapes" and result["dataset"]["split"] == "train"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"fidelity": round(session.metrics["fidelity"], 4),
                      "accuracy": round(session.metrics["accuracy"], 4)}
    assert len(card.data.eval_results) == 2  # huggingface_hub reads the model-index back
    text = card.text
    assert "| class | concepts (weight on standardised presence) |" in text
    for name in CLASSES:
        assert f"| {name} |" in text
    assert session.log[1].summary in text  # the edit applied
    assert 'ConceptStudent.from_pretrained("alice/card-student")' in text
    assert "## Limitations" in text and "alice/tiny-teacher" in text


def test_private_repos_and_tokens(hub_world, hub, tmp_path, caplog):
    student = ConceptStudent.from_session(hub_world["session"], hub_world["encoder"])
    with caplog.at_level(logging.DEBUG):
        student.push_to_hub("alice/secret", private=True, token=ALICE)
    assert HfApi(token=ALICE).model_info("alice/secret").private
    for token in (None, BOB):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).model_info("alice/secret")
    with pytest.raises(HubError, match="does not exist, or it is private"):
        ConceptStudent.from_pretrained("alice/secret", cache_dir=tmp_path / "anon")
    assert ConceptStudent.from_pretrained("alice/secret", token=ALICE,
                                          cache_dir=tmp_path / "alice").concepts == student.concepts
    # No token in any pushed file, any request line or any log record.
    for repo in ("alice/secret", "alice/student", "alice/card-student"):
        for path, content in hub.repo_files("model", repo).items():
            for token in HUB_TOKENS:
                assert token.encode() not in content, (repo, path)
    for token in HUB_TOKENS:
        assert not any(token in line for _, line, _ in hub.requests_log)
        assert token not in caplog.text


def test_clear_errors_for_a_bad_token_no_access_a_missing_repo_and_no_connection(hub_world, hub, monkeypatch):
    student = ConceptStudent.from_session(hub_world["session"], hub_world["encoder"])
    with pytest.raises(HubError, match=r"without a valid token \(401\)"):
        student.push_to_hub("alice/other", token="hf_not_a_token")
    with pytest.raises(HubError, match=r"may not write to 'alice/student' \(403\)"):
        student.push_to_hub("alice/student", token=BOB)
    with pytest.raises(HubError, match=r"\(403\)"):
        student.push_to_hub("alice/student", token=ALICE_READ)
    with pytest.raises(HubError, match="'alice/nothing-here' does not exist"):
        ConceptStudent.from_pretrained("alice/nothing-here")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubError, match="cannot be reached"):
        student.push_to_hub("alice/student", token=ALICE)


def _closed_port() -> int:
    from .conftest import _free_port

    return _free_port()  # bound then released: nothing listens there


def test_cli_push_of_a_saved_student(hub_world, hub, tmp_path, capsys):
    from infincond.cli import main

    ConceptStudent.from_session(hub_world["session"], hub_world["encoder"]).save_pretrained(tmp_path / "student")
    assert main(["push", "--student", str(tmp_path / "student"), "--repo", "alice/cli-student", "--token", ALICE]) == 0
    assert f"{hub.url}/alice/cli-student" in capsys.readouterr().out
    card = ModelCard.load(hf_hub_download("alice/cli-student", "README.md"))
    assert card.data.eval_results and hub_world["session"].log[1].summary in card.text  # metrics and log travelled
    assert main(["push", "--student", str(tmp_path / "student"), "--repo", "alice/cli-student"]) == 2  # no token
    assert "without a valid token (401)" in capsys.readouterr().err
