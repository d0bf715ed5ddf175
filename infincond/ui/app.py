"""The Gradio Blocks app: the layout (:mod:`.layout`) with every event wired (:mod:`.events`), the presets,
and what ``launch`` needs. Every event has a stable ``api_name`` and named parameters, so ``gradio_client``
can drive the whole workflow; the browser keeps the session's id, so a reload or a server restart offers to
restore it."""

from __future__ import annotations

import copy
import functools
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..features import default_cache_dir
from ..shared import SHARED, SharedCache
from .events import outputs_of, wire
from .handlers import push_token
from .layout import CSS, layout, on_space
from .pictures import thumbnail_folder
from .settings import LoadSettings
from .workspace import Workspace
from .world_job import WorldJob

CIFAR10 = LoadSettings(teacher="aaraki/vit-base-patch16-224-in21k-finetuned-cifar10", dataset="uoft-cs/cifar10",
                       encoder="openai/clip-vit-base-patch32", config_name="plain_text", split="test", samples=1000)


def app_secret(cache_dir: str | os.PathLike | None) -> str:
    """The secret that encrypts the session id kept in the browser, the same across restarts (kept in the
    cache, readable by this user only)."""
    path = Path(cache_dir or default_cache_dir()) / "app-secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def one_blas_thread() -> None:
    """numpy's BLAS on one thread in the app's process. The views' small products gain little from more, and
    OpenBLAS's idle threads spin after every call: measured on the 2-core machine, a select cost 140 ms of
    server CPU with them and 48 ms without (its round trip 122 -> 87 ms), CPU every other session waited for.
    The long jobs run in torch, whose own threads this leaves alone."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def cached_data_model_schemas() -> None:
    """Gradio's data models' JSON schemas computed once per model. Gradio rebuilds an output's config after
    every event that returns an update for it (or leaves it as it was: that is an update too), and with it
    the JSON schema of the component's data model, which pydantic generates anew each time: 2.7 ms for a
    gallery, 0.7 for a table, 17 ms of the 36 outputs of an undo on the 2-core machine. A schema depends on
    the model class only; each caller gets its own copy."""
    from gradio.data_classes import GradioModel, GradioRootModel

    for base in (GradioModel, GradioRootModel):
        original = base.model_json_schema
        if getattr(original, "cached_by_infincond", False):
            continue
        schemas: dict = {}

        def model_json_schema(cls, *args, _original=original.__func__, _schemas=schemas, **kwargs):
            key = (cls, args, tuple(sorted(kwargs.items())))
            if key not in _schemas:
                _schemas[key] = _original(cls, *args, **kwargs)
            return copy.deepcopy(_schemas[key])

        model_json_schema.cached_by_infincond = True
        base.model_json_schema = classmethod(model_json_schema)


@functools.cache
def pictures_served_in_place() -> None:
    """The pictures are files written once and never changed (:func:`.pictures.drawn_once`): served from where
    they are. Any other file Gradio is returned, it hashes (reads) and copies into its cache on every event
    that returns it again: half of a select's server time went to its 13 pictures. Once per process: Gradio
    adds to its list of static paths on every call, and checks each returned file against all of them."""
    gr.set_static_paths([thumbnail_folder()])


def launch_kwargs() -> dict:
    """Arguments for ``demo.launch``: the theme and CSS (Gradio 6 takes them there), and the host a Space needs."""
    kwargs = {"theme": gr.themes.Soft(), "css": CSS}
    if on_space():
        kwargs["server_name"] = "0.0.0.0"
    return kwargs


def build_app(presets: dict[str, LoadSettings] | None = None, cache_dir: str | os.PathLike | None = None, *,
              world: WorldJob | None = None, shared: SharedCache = SHARED,
              workspace: Callable[[], Workspace] | None = None) -> gr.Blocks:
    """The app. ``presets`` fill the setup fields (the first is the default); ``world``, a Shapes world
    still building, becomes the first preset once ready (the page shows its progress meanwhile);
    ``cache_dir`` holds features, autosaves and session folders; ``shared``, the models and features that
    sessions share; ``workspace`` makes each new session's workspace (benchmarks start sessions on a
    FeatureSet with it)."""
    one_blas_thread()
    cached_data_model_schemas()
    pictures_served_in_place()
    # Gradio recomputes its monitoring summary (a DataFrame of up to 10,000 past events, grouped) after every
    # event by default: 7% of the server's busy time in a select / undo loop. Every 500 events is plenty.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "500")
    entries: dict[str, LoadSettings | None] = {}
    if world is not None:
        entries["Shapes world (offline)"] = world.preset()
    entries.update(presets or {})
    entries.setdefault("CIFAR-10 from the Hub", CIFAR10)
    cache = os.fspath(cache_dir) if cache_dir else None
    with gr.Blocks(title="InFiConD") as demo:
        c = layout(entries, app_secret(cache))
        c.demo = demo
        wire(c, entries, workspace or (lambda: Workspace(cache_dir=cache, shared=shared)), world)
    return demo


__all__ = ["CIFAR10", "LoadSettings", "build_app", "launch_kwargs", "outputs_of", "push_token"]
