"""The local Hub server (`hub_server.py`), driven over real HTTP by the real huggingface_hub, transformers and
datasets clients."""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.request
import uuid
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

ALICE, BOB, ALICE_READ = "hf_alice_write_token", "hf_bob_write_token", "hf_alice_read_token"


def _new_id(name: str, user: str = "alice") -> str:
    """A repo id not used yet in this session (the hub fixture is shared by the whole session)."""
    return f"{user}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _every_request_supported(hub):
    """Each test fails if a client sent a request the local hub does not serve."""
    start = len(hub.unhandled)
    yield
    assert hub.unhandled[start:] == []


def test_upload_then_download_same_bytes_and_history(hub, tmp_path):
    api = HfApi(token=ALICE)
    repo_id = api.create_repo(_new_id("m")).repo_id
    folder = tmp_path / "upload"
    files = {"config.json": b'{"hidden": 16}', "sub/notes.txt": b"hello\n", "weights.bin": os.urandom(11 * 2**20)}
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)

    first = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Add files")

    assert {p: d for p, d in hub.repo_files("model", repo_id).items() if p != ".gitattributes"} == files
    assert api.model_info(repo_id).sha == first.oid
    assert get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), token=False).commit_hash == first.oid  # HEAD
    downloaded = hf_hub_download(repo_id, "weights.bin", cache_dir=tmp_path / "cache", token=False)
    assert Path(downloaded).read_bytes() == files["weights.bin"]
    snapshot = Path(snapshot_download(repo_id, cache_dir=tmp_path / "snap", token=False))
    assert snapshot.name == first.oid
    assert {p: (snapshot / p).read_bytes() for p in files} == files

    # The >10 MB file went through Git LFS, small text files inline; folders are listed too.
    tree = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True)}
    assert isinstance(tree["sub"], RepoFolder) and isinstance(tree["sub/notes.txt"], RepoFile)
    assert tree["weights.bin"].lfs.sha256 == hashlib.sha256(files["weights.bin"]).hexdigest()
    assert tree["config.json"].lfs is None and tree["config.json"].size == len(files["config.json"])
    infos = api.get_paths_info(repo_id, ["sub", "config.json", "missing.txt"])
    assert [type(info).__name__ for info in infos] == ["RepoFolder", "RepoFile"]

    # A second commit adds one file and keeps the others; the first revision is unchanged.
    second = api.upload_file(path_or_fileobj=b"more", path_in_repo="sub/more.txt", repo_id=repo_id)
    assert api.list_repo_files(repo_id) == sorted([".gitattributes", *files, "sub/more.txt"])
    assert api.model_info(repo_id).sha == second.oid
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [second.oid, first.oid]
    assert [c["id"] for c in hub.commits("model", repo_id)][:2] == [second.oid, first.oid]
    assert "sub/more.txt" not in api.list_repo_files(repo_id, revision=first.oid)
    assert hub.repo_files("model", repo_id, first.oid).keys() == {".gitattributes", *files}
    later = hf_hub_download(repo_id, "config.json", revision=second.oid, cache_dir=tmp_path / "cache", token=False)
    assert Path(later).read_bytes() == files["config.json"]
    third = api.delete_folder("sub", repo_id=repo_id)
    assert api.list_repo_files(repo_id) == [".gitattributes", "config.json", "weights.bin"]

    # Range requests (resumed downloads) get a 206 with the requested bytes.
    request = urllib.request.Request(hf_hub_url(repo_id, "weights.bin"), headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206 and response.read() == files["weights.bin"][10:20]
        assert response.headers["X-Repo-Commit"] == third.oid


def test_transformers_push_to_hub_then_from_pretrained(hub, tmp_path):
    import torch
    from transformers import AutoModel, BertConfig

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = AutoModel.from_config(config)
    repo_id = _new_id("tiny")
    model.push_to_hub(repo_id, token=ALICE)

    loaded = AutoModel.from_pretrained(repo_id, cache_dir=tmp_path)
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_datasets_push_to_hub_then_load_dataset(hub, tmp_path):
    import datasets

    rows = {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    repo_id = _new_id("ds")
    datasets.Dataset.from_dict(rows).push_to_hub(repo_id, token=ALICE)

    assert any(p.endswith(".parquet") for p in hub.repo_files("dataset", repo_id))
    loaded = datasets.load_dataset(repo_id, cache_dir=str(tmp_path))
    assert loaded["train"].to_dict() == rows


def test_auth_and_not_found_errors(hub, tmp_path):
    alice, bob, anonymous = HfApi(token=ALICE), HfApi(token=BOB), HfApi(token=False)
    assert alice.whoami()["name"] == "alice" and alice.whoami()["auth"]["accessToken"]["role"] == "write"

    private_id = alice.create_repo(_new_id("secret"), private=True).repo_id
    alice.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id=private_id)
    assert alice.model_info(private_id).private is True
    assert alice.list_repo_files(private_id) == [".gitattributes", "f.txt"]
    for api in (anonymous, bob):
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(private_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(private_id, "f.txt", cache_dir=tmp_path, token=False)
    alice.update_repo_settings(private_id, private=False)
    assert anonymous.list_repo_files(private_id) == [".gitattributes", "f.txt"]

    for call in (HfApi(token="hf_bad").whoami, lambda: HfApi(token="hf_bad").create_repo(_new_id("bad"))):
        with pytest.raises(HfHubHTTPError) as err:
            call()
        assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo(_new_id("anon"))
    assert err.value.response.status_code == 401

    public_id = alice.create_repo(_new_id("public")).repo_id
    assert alice.create_repo(public_id, exist_ok=True).repo_id == public_id
    with pytest.raises(HfHubHTTPError) as err:
        alice.create_repo(public_id)
    assert err.value.response.status_code == 409
    forbidden = [
        lambda: bob.create_repo(_new_id("intruder")),
        lambda: bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=public_id),
        lambda: HfApi(token=ALICE_READ).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=public_id),
    ]
    for call in forbidden:
        with pytest.raises(HfHubHTTPError) as err:
            call()
        assert err.value.response.status_code == 403
    assert alice.list_repo_files(public_id) == [".gitattributes"]

    alice.update_repo_settings(public_id, gated="auto")
    with pytest.raises(GatedRepoError):
        hf_hub_download(public_id, ".gitattributes", cache_dir=tmp_path, token=BOB)
    alice.delete_repo(public_id)
    assert not alice.repo_exists(public_id)

    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("alice/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/does-not-exist", "f.txt", cache_dir=tmp_path, token=False)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(private_id, "missing.txt", cache_dir=tmp_path, token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(private_id, "f.txt", revision="refs/convert/parquet", cache_dir=tmp_path, token=False)
    with pytest.raises(RevisionNotFoundError):
        anonymous.model_info(private_id, revision="0" * 40)

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(httpx2.ConnectError, match="Connection refused"):
        HfApi(endpoint=f"http://127.0.0.1:{closed_port}", token=False).model_info(public_id)


def test_tokens_only_travel_in_headers(hub):
    api = HfApi(token=ALICE)
    repo_id = api.create_repo(_new_id("headers")).repo_id
    api.upload_file(path_or_fileobj=b"x", path_in_repo="f.txt", repo_id=repo_id)
    api.list_repo_files(repo_id)
    assert len(hub.requests_log) >= 3
    for token in (ALICE, BOB, ALICE_READ):
        assert not [path for _, path, _ in hub.requests_log if token in path]
