"""Session fixtures: tiny real models and datasets, built once and loaded by path like Hub repo ids."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# huggingface_hub reads its endpoint at import time, so it is set here, before anything imports it: every
# Hub request of the tests goes to the local Hub-compatible server (the `hub` fixture), never the network.
HUB_PORT = _free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)  # a developer's real token (or cached login) never reaches the tests
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="infincond-test-hf-")  # Hub caches of this run only
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
#: Tokens the local Hub accepts: token -> (user name, role "write" or "read").
HUB_TOKENS = {"hf_alice_write_token": ("alice", "write"), "hf_bob_write_token": ("bob", "write"),
              "hf_alice_read_token": ("alice", "read")}

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property tests: derandomised in CI (the same examples on every run, no example database), so that CI is
# deterministic; `HYPOTHESIS_PROFILE=thorough` runs many more examples locally.
settings.register_profile("default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("default"), derandomize=True, database=None, print_blob=True)
settings.register_profile("thorough", settings.get_profile("default"), max_examples=400)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))

from infincond import ConceptCorpus, ConceptEncoder, DataConfig, ImageSource, Teacher, extract_features  # noqa: E402
from infincond.demo import WorldConfig, build_world  # noqa: E402
from infincond.testing import build_tiny_clip, build_tiny_teacher, make_shapes_dataset  # noqa: E402

CLASSES = ("red", "green", "blue")
CONCEPTS = ["red", "green", "blue", "circle", "square", "triangle", "white", "dark", "bright", "round"]


@pytest.fixture(scope="session")
def repos(tmp_path_factory):
    """Paths of a tiny CLIP encoder, a ViT teacher and a saved shapes dataset."""
    root = tmp_path_factory.mktemp("repos")
    clip = build_tiny_clip(root / "clip", CONCEPTS)
    teacher = build_tiny_teacher(root / "teacher", CLASSES)
    dataset = root / "shapes"
    make_shapes_dataset(120, classes=CLASSES).save_to_disk(str(dataset))
    return {"clip": str(clip), "teacher": str(teacher), "dataset": str(dataset), "root": root}


@pytest.fixture(scope="session")
def source(repos):
    return ImageSource.load(DataConfig(repos["dataset"], samples=100, seed=0))


@pytest.fixture(scope="session")
def teacher(repos, source):
    return Teacher.from_pretrained(repos["teacher"], dataset_label_names=source.label_names, device="cpu")


@pytest.fixture(scope="session")
def encoder(repos):
    return ConceptEncoder.from_pretrained(repos["clip"], device="cpu")


@pytest.fixture(scope="session")
def corpus():
    return ConceptCorpus.from_list(CONCEPTS)


@pytest.fixture(scope="session")
def features(source, teacher, encoder, corpus, tmp_path_factory):
    return extract_features(source, teacher, encoder, corpus, cache_dir=tmp_path_factory.mktemp("cache"),
                            progress=False)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The reduced Shapes world (same code and layout as the default one, built in seconds)."""
    return build_world(WorldConfig.quick(), tmp_path_factory.mktemp("world") / "shapes", progress=False)


@pytest.fixture(scope="session")
def preset(world):
    """The reduced Shapes world as the app's preset: 200 training images, the built-in corpus plus the
    world's vocabulary (what `python app.py` opens with, on a smaller sample)."""
    from infincond.ui import shapes_preset

    return shapes_preset(world, samples=200)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A local Hub-compatible HTTP server on ``HF_ENDPOINT``, backed by a temporary folder."""
    from .hub_server import LocalHub

    server = LocalHub(tmp_path_factory.mktemp("hub"), port=HUB_PORT, tokens=HUB_TOKENS)
    server.start()
    yield server
    server.stop()
