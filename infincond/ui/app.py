"""The Gradio Blocks app: setup, six coordinated views and Share.

Every event has a stable ``api_name`` (so ``gradio_client`` can drive the whole workflow), changes the
user's own :class:`Workspace` (in ``gr.State``), then returns updates for only the groups of components its
change touches (:data:`EVENT_GROUPS`): a heatmap click refreshes the selection, the heatmap, the tuning
panel and the concept gallery, never the performance plots. Each event runs as a transaction (a refused
one changes nothing) and is autosaved; the browser keeps the session's id, so a reload or a server restart
offers to restore it."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..checks import check_choice, check_integer
from ..errors import ConfigError, InfinconError
from ..features import default_cache_dir
from ..shared import SHARED, SharedCache
from . import views
from .layout import CSS, GROUPS, SORTS, group, layout, on_space
from .settings import LoadSettings
from .workspace import Workspace
from .world_job import WorldJob

log = logging.getLogger(__name__)

CIFAR10 = LoadSettings(teacher="aaraki/vit-base-patch16-224-in21k-finetuned-cifar10", dataset="uoft-cs/cifar10",
                       encoder="openai/clip-vit-base-patch32", config_name="plain_text", split="test", samples=1000)
ALL = tuple(GROUPS)
STUDENT = ("perf", "audit", "subset", "heat", "images", "detail", "tuning", "provenance", "controls")  # a new student
EDITED = ("perf", "audit", "subset", "heat", "detail", "tuning", "provenance", "controls")  # the weights moved
#: The groups each event may change (it returns updates for those that did).
EVENT_GROUPS = {
    "load": ALL, "restore": ALL, "distill": STUDENT, "pick_student": STUDENT, "import_log": STUDENT,
    "select_cell": ("heat", "images", "detail", "tuning", "controls"),
    "select": ("heat", "images", "detail", "tuning", "controls"),
    "add_concept": ("heat", "images", "detail", "tuning", "controls"),
    "select_image": ("detail",), "open_subset": ("subset",), "view": ("heat",),
    "open_finding": ("audit", "heat", "images", "detail", "tuning", "controls"),
    "finding": ("audit", "heat", "images", "detail", "tuning", "controls"), "set_groups": ("perf", "provenance"),
    "apply": EDITED, "blend": EDITED, "undo": EDITED, "redo": EDITED, "jump": EDITED,
}


def outputs_of(api: str) -> list[str]:
    """The names of an event's outputs, in the order ``gradio_client`` returns them (tests read them): the
    API returns values only, so buttons (the controls group) and layout rows are not among them."""
    extra = {"apply": ["preview_md"], "blend": ["preview_md"], "undo": ["preview_md"], "redo": ["preview_md"],
             "jump": ["preview_md"], "import_log": ["preview_md"], "restore": ["restore_md"],
             "add_concept": ["new_concept"], "open_finding": ["action"],
             "finding": ["action"]}.get(api, [])
    return extra + [name for g in EVENT_GROUPS[api] if g != "controls" for name in GROUPS[g]]


_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_of(ws: Workspace) -> threading.RLock:
    """The lock that runs one workspace's events one at a time (a chained refit and an Apply clicked
    meanwhile would otherwise edit the same session at once); dropped with the workspace."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(id(ws))
        if lock is None:
            lock = _LOCKS[id(ws)] = threading.RLock()
            weakref.finalize(ws, _LOCKS.pop, id(ws), None)
        return lock


def _guard(fn: Callable) -> Callable:
    """Run an event inside its workspace's transaction (a refused event changes nothing), one at a time
    per workspace, autosave what it changed, and show the project's errors as clear messages in the page;
    log anything unexpected."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ws = next((a for a in args if isinstance(a, Workspace)), None)
        try:
            if ws is None:
                return fn(*args, **kwargs)
            with _lock_of(ws), ws.transaction():
                result = fn(*args, **kwargs)
                ws.autosave()
            return result
        except gr.Error:
            raise
        except InfinconError as err:
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # noqa: BLE001 - shown to the user, logged in full
            log.error("Unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
            raise gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The details are in the server log.",
                           print_exception=False) from err
    return wrapper


def _index(evt: gr.SelectData | None, axis: int = 0) -> int:
    """The row (axis 0) or column (axis 1) of a select event, as an int."""
    if evt is None:
        raise ConfigError("This event needs a selection (click a cell, a row or an image).")
    index = evt.index if isinstance(evt.index, (list, tuple)) else (evt.index, 0)
    return check_integer("selected index", index[axis], 0)


def view_options(n, order) -> tuple[int, str]:
    return check_integer("top concepts", n, 1, 500), check_choice("sort", order, SORTS)


def app_secret(cache_dir: str | os.PathLike | None) -> str:
    """The secret that encrypts the session id kept in the browser, the same across restarts (kept in the
    cache, readable by this user only)."""
    path = Path(cache_dir or default_cache_dir()) / "app-secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def render(c, ws: Workspace, groups: tuple[str, ...], n: int = 20, order: str = "any class") -> dict:
    """Updates for the components of ``groups``, rendered from the workspace."""
    out: dict = {}
    if "config" in groups:
        out.update(zip(group(c, "config"), views.configuration(ws), strict=True))
    if "perf" in groups:
        text, bars, curve, choices, picked, table = views.performance(ws)
        group_choices, group_value, groups_table = views.groups(ws)
        out.update({c.perf_md: text, c.class_bars: bars, c.nec_curve: curve,
                    c.pick_nec: gr.Dropdown(choices=choices, value=picked), c.disagreements: table,
                    c.group_by: gr.Dropdown(choices=group_choices, value=group_value), c.groups_table: groups_table})
    if "audit" in groups:
        out.update(zip(group(c, "audit"), views.shortcuts(ws), strict=True))
    if "subset" in groups:
        out[c.subset_images] = views.subset_gallery(ws)
    if "heat" in groups:
        out[c.heat] = views.heatmap(ws, n, order)
    if "images" in groups:
        out.update(zip(group(c, "images"), views.concept_images(ws), strict=True))
    if "detail" in groups:
        out.update(zip(group(c, "detail"), views.image_detail(ws), strict=True))
    if "tuning" in groups:
        choices, released = views.proxies(ws)
        out.update({c.selection_md: views.selection(ws), c.proxies: gr.CheckboxGroup(choices=choices, value=released),
                    c.edits: views.edits_table(ws)})
    if "provenance" in groups:
        table, points, steps = views.provenance(ws)
        out.update({c.log_plot: gr.LinePlot(value=points, sort=steps or None), c.log_table: table})
    if "controls" in groups:
        out.update(_controls(c, ws))
    return out


def _controls(c, ws: Workspace) -> dict:
    has_features, session = ws.features is not None, ws.session
    selected = session is not None and ws.concept is not None and ws.class_id is not None
    on = {c.distill_btn: has_features, c.preview_btn: selected, c.apply_btn: selected,
          c.alpha_btn: session is not None, c.undo_btn: session is not None and session.can_undo,
          c.redo_btn: session is not None and session.can_redo, c.jump_btn: session is not None,
          c.export_btn: session is not None, c.import_btn: has_features, c.save_btn: session is not None,
          c.zip_btn: session is not None, c.push_btn: session is not None,
          c.concept_btn: session is not None and ws.can_add_concepts}
    return {button: gr.Button(interactive=value) for button, value in on.items()}


def push_token(oauth_token: gr.OAuthToken | None) -> str | None:
    """The token a push uses: the signed-in user's on a Space ("Sign in with Hugging Face"), else ``HF_TOKEN``."""
    if oauth_token is not None and oauth_token.token:
        return oauth_token.token
    return os.environ.get("HF_TOKEN") or None


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
    from .events import wire

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


__all__ = ["CIFAR10", "EVENT_GROUPS", "LoadSettings", "build_app", "launch_kwargs", "outputs_of", "push_token"]
