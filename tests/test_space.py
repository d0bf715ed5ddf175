"""The app as a Hugging Face Space: the front matter parses and matches the requirements, `infincond space
deploy` uploads what the Space runs to the local Hub, and the staged app starts with a Space's environment
(where visitors save only under their own session folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import gradio
from gradio_client import Client
from huggingface_hub import HfApi
from packaging.requirements import Requirement

from infincond.cli import main
from infincond.space import PROJECT_ROOT, front_matter, stage_space
from infincond.ui import CIFAR10, push_token, shapes_preset

from .conftest import _free_port
from .test_app import load_and_distil

ALICE = "hf_alice_write_token"


def _requirements(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line and not line.startswith(("-", "--"))]
    return {r.name.lower(): r for r in reqs}


def test_front_matter_parses_and_matches_the_requirements():
    meta = front_matter(PROJECT_ROOT / "spaces" / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (PROJECT_ROOT / "app.py").exists()
    # The Space runs the Gradio version the project is tested with, which its requirements allow.
    assert meta["sdk_version"] == gradio.__version__
    assert _requirements(PROJECT_ROOT / "requirements.txt")["gradio"].specifier.contains(meta["sdk_version"])
    assert meta["hf_oauth"] is True and {"write-repos", "manage-repos"} <= set(meta["hf_oauth_scopes"])
    assert set(meta["models"]) == {CIFAR10.teacher, CIFAR10.encoder} and meta["datasets"] == [CIFAR10.dataset]
    assert 0 < len(meta["short_description"]) <= 60  # the Hub's limit
    space, root = (_requirements(PROJECT_ROOT / "spaces" / "requirements.txt"),
                   _requirements(PROJECT_ROOT / "requirements.txt"))
    assert "gradio" not in space  # the Space installs gradio from sdk_version...
    oauth = {Requirement(r).name.lower() for r in metadata.requires("gradio") if "extra == 'oauth'" in r}
    assert oauth and oauth <= set(space)  # ...but "Sign in with Hugging Face" needs gradio's OAuth extras
    assert space["torch"].specifier == root["torch"].specifier
    package = {Requirement(d).name.lower() for d in _pyproject_dependencies()}
    assert package <= set(space)  # everything the package imports is installed on the Space


def _pyproject_dependencies() -> list[str]:
    import tomllib

    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_space_deploy_uploads_the_app_to_the_hub(hub, capsys):
    assert main(["space", "deploy", "--repo", "alice/infincond-app", "--token", ALICE]) == 0
    assert f"{hub.url}/spaces/alice/infincond-app" in capsys.readouterr().out
    files = set(HfApi(token=ALICE).list_repo_files("alice/infincond-app", repo_type="space"))
    assert {"README.md", "requirements.txt", "app.py", "infincond/__init__.py", "infincond/ui/app.py"} <= files
    assert not any("__pycache__" in f for f in files)
    assert main(["space", "deploy", "--repo", "alice/infincond-app", "--token", "hf_wrong"]) == 2
    assert "without a valid token (401)" in capsys.readouterr().err


def test_the_staged_space_starts_with_space_environment_variables(world, tmp_path):
    folder = stage_space(tmp_path / "space")
    port = _free_port()
    env = {**os.environ, "SPACE_ID": "alice/infincond-app", "SPACE_HOST": "alice-infincond-app.hf.space",
           "SPACE_AUTHOR_NAME": "alice", "SPACE_REPO_NAME": "infincond-app", "SYSTEM": "spaces",
           "OAUTH_CLIENT_ID": "test-client", "OAUTH_CLIENT_SECRET": "test-secret",
           "OAUTH_SCOPES": "openid profile read-repos write-repos manage-repos",
           "OPENID_PROVIDER_URL": os.environ["HF_ENDPOINT"], "GRADIO_SERVER_PORT": str(port),
           "INFINCOND_WORLD": str(world.root), "INFINCOND_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    process = subprocess.Popen([sys.executable, "app.py", "--samples", "100"], cwd=folder, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        config = _wait_for_config(f"http://127.0.0.1:{port}/config", process)
        types = {c.get("type") for c in config["components"]}
        assert "loginbutton" in types or any(c.get("props", {}).get("value") == "Sign in with Hugging Face"
                                             for c in config["components"])
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert "Hub repo (user/name)" in labels
        # A visitor saves under their own session's folder only: a free path (here one that climbs out) is ignored.
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        preset = shapes_preset(world, samples=100)
        load_and_distil(client, preset)
        escape = tmp_path / "escape"
        message = client.predict(str(escape), api_name="/save")
        saved = list((tmp_path / "cache" / "sessions").glob("*/saved/student"))
        assert not escape.exists() and len(saved) == 1 and (saved[0] / "model.safetensors").is_file()
        assert str(saved[0]) in message and "Download as zip" in message
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "0.0.0.0" in output or "Running on" in output, output[-2000:]
    # The only traceback allowed is asyncio's note, at exit, about an event loop closed after SIGTERM.
    exit_noise = output.count("Exception ignored in: <function BaseEventLoop.__del__")
    assert output.count("Traceback") == exit_noise, output[-3000:]


def _wait_for_config(url: str, process: subprocess.Popen, timeout: float = 120) -> dict:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {process.communicate()[0][-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(1)
    raise AssertionError("the app did not start in time")


def test_a_push_on_a_space_uses_the_signed_in_users_token(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    signed_in = gradio.OAuthToken(token="hf_bob_write_token", scope="openid profile write-repos manage-repos",
                                  expires_at=int(time.time()) + 3600)
    assert HfApi(token=push_token(signed_in)).whoami()["name"] == "bob"  # the OAuth token wins on a Space...
    assert HfApi(token=push_token(None)).whoami()["name"] == "alice"  # ...HF_TOKEN is the local fallback
    monkeypatch.delenv("HF_TOKEN")
    assert push_token(None) is None  # and then the app asks to sign in (tested in test_app)
