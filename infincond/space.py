"""Deploying the app as a Hugging Face Space: stage ``app.py``, the package and ``spaces/`` (front matter,
requirements) into one folder, and upload it to a Space repo in one commit."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError
from .hub import check_repo_id, endpoint, hub_errors

#: The source checkout: ``app.py``, ``spaces/`` and the ``infincond`` package sit here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def front_matter(readme: str | os.PathLike) -> dict:
    """The YAML front matter of a README (a Space's configuration), as a dict."""
    from huggingface_hub import RepoCard

    return RepoCard.load(readme).data.to_dict()


def stage_space(target: str | os.PathLike, project: str | os.PathLike = PROJECT_ROOT) -> Path:
    """Write what a Space runs into ``target``: ``README.md`` (front matter) and ``requirements.txt`` from
    ``spaces/``, the root ``app.py``, and the ``infincond`` package, which the Space imports from its root."""
    project, target = Path(project), Path(target)
    if not (project / "spaces" / "README.md").exists() or not (project / "app.py").exists():
        raise ConfigError(f"{project} is not an InFiConD source checkout (spaces/README.md and app.py are needed): "
                          "run the deploy from a clone of the repository.")
    target.mkdir(parents=True, exist_ok=True)
    for item in (project / "spaces").iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    shutil.copy2(project / "app.py", target / "app.py")
    shutil.copytree(project / "infincond", target / "infincond", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def deploy_space(repo_id: str, token: str | None = None, private: bool = False,
                 project: str | os.PathLike = PROJECT_ROOT) -> str:
    """Create (or update) the Gradio Space ``repo_id`` with the staged app; returns the Space's URL.

    Files already in the Space that the app does not write are kept.
    """
    from huggingface_hub import HfApi

    repo_id = check_repo_id(repo_id)
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise ConfigError("No Hugging Face token: pass --token or set HF_TOKEN (it needs write access).")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="infincond-space-") as tmp, hub_errors("deploy the Space", repo_id):
        folder = stage_space(Path(tmp) / "space", project)
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, repo_type="space", folder_path=folder,
                          commit_message="Deploy the InFiConD app")
    return f"{endpoint()}/spaces/{url.repo_id}"
