"""The events: what each one may change in the workspace (:data:`EVENTS`), its handler (which calls the
workspace's methods: the UI computes nothing itself), the guard every event runs in, and :func:`wire`,
which attaches them to the layout.

A handler changes the workspace and returns only the components it sets itself (a message, a file). The
guard runs it one at a time per workspace, inside a transaction (a refused event changes nothing), then
re-renders the views (:data:`.views.VIEWS`) that read an aspect of the workspace the event did change
(:meth:`~.derived.Derived.aspects` before and after), autosaves, and turns the project's errors into clear
messages on the page. Every endpoint has named parameters and labelled outputs."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from ..checks import check_integer
from ..data import DataConfig
from ..errors import ConfigError, InfinconError
from ..tuning import Action
from . import autosave
from .derived import ASPECTS
from .layout import ACTIONS, GROUPS, SETUP_FIELDS, on_space
from .settings import LoadSettings
from .views import VIEWS, entry_text, preview_text
from .workspace import Workspace, new_id
from .world_job import WorldJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """What an event may change: aspects of the workspace (:data:`~.derived.ASPECTS`; the views that read
    them are its outputs), and other components it sets itself, by name."""

    changes: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()


STUDENT = ("student", "weights", "selection", "concept", "image", "subset", "finding")  # another student
SELECTION = ("selection", "concept", "image")
MOVED = ("weights", "finding")  # the student's weights moved (the audit's first finding may change with them)
#: Every event of the app, by its API name.
EVENTS = {
    "load": Event(ASPECTS), "restore": Event(ASPECTS, ("restore_md", "restore_row")),
    "distill": Event(STUDENT), "pick_student": Event(STUDENT), "import_log": Event(STUDENT, ("preview_md",)),
    "select_cell": Event(SELECTION), "select": Event(SELECTION),
    "add_concept": Event(("concepts", *SELECTION), ("new_concept",)),
    "select_image": Event(("image",)), "open_subset": Event(("subset",)), "view": Event(("heatmap",)),
    "open_finding": Event(("finding", *SELECTION), ("action",)), "finding": Event(("finding", *SELECTION), ("action",)),
    "set_groups": Event(("groups",)),
    "apply": Event(MOVED, ("preview_md",)), "blend": Event(MOVED, ("preview_md",)),
    "undo": Event(MOVED, ("preview_md",)), "redo": Event(MOVED, ("preview_md",)), "jump": Event(MOVED, ("preview_md",)),
    "preview": Event(sets=("preview_md",)), "preview_refit": Event(sets=("preview_md",)),
    "export_log": Event(sets=("log_file",)), "save": Event(sets=("share_md",)), "download": Event(sets=("zip_file",)),
    "push": Event(sets=("share_md",)), "session": Event(sets=("session_id",)),
    "discard": Event(sets=("browser", "restore_md", "restore_row")),
}
#: Outputs the API does not return (layout and buttons): not among :func:`outputs_of`.
NOT_RETURNED = {"restore_row", "browser", *GROUPS["controls"]}


def groups_of(api: str) -> tuple[str, ...]:
    """The groups of components an event may re-render: the views that read what it may change."""
    changes = set(EVENTS[api].changes)
    return tuple(group for group in GROUPS if VIEWS[group].reads & changes)


def outputs_of(api: str) -> list[str]:
    """The names of an event's outputs, in the order ``gradio_client`` returns them (tests read them)."""
    names = [*EVENTS[api].sets, *(name for group in groups_of(api) for name in GROUPS[group])]
    return [name for name in names if name not in NOT_RETURNED]


def _index(evt: gr.SelectData | None, axis: int = 0) -> int:
    """The row (axis 0) or column (axis 1) of a select event, as an int."""
    if evt is None:
        raise ConfigError("This event needs a selection (click a cell, a row or an image).")
    index = evt.index if isinstance(evt.index, (list, tuple)) else (evt.index, 0)
    return check_integer("selected index", index[axis], 0)


def push_token(oauth_token: gr.OAuthToken | None) -> str | None:
    """The token a push uses: the signed-in user's on a Space ("Sign in with Hugging Face"), else ``HF_TOKEN``."""
    if oauth_token is not None and oauth_token.token:
        return oauth_token.token
    return os.environ.get("HF_TOKEN") or None


#: The label blend a "fix with labels" remove uses while the alpha slider is at 0.
FIX_ALPHA = 0.5


def _edit(action, factor, release=None, with_labels=False, alpha=0.0) -> tuple:
    """(action, factor, released proxies, label blend) for the workspace, from the tuning panel's values."""
    alpha = alpha or 0.0
    return ACTIONS.get(action, action), factor, release, ((alpha if alpha > 0 else FIX_ALPHA) if with_labels else None)


def _settings(values: dict, corpus_file) -> LoadSettings:
    return LoadSettings((values["teacher"] or "").strip(), (values["dataset"] or "").strip(),
                        (values["encoder"] or "").strip(), values["config_name"] or None, values["split"] or None,
                        values["image_column"] or "auto", values["label_column"] or "auto",
                        DataConfig.samples if values["samples"] is None else values["samples"], values["corpus"],
                        values["concepts_text"] or "", corpus_file or None, (values["group_column"] or "").strip())


def _fields(settings: LoadSettings) -> list:
    return [settings.teacher, settings.dataset, settings.config_name or "", settings.split or "",
            settings.image_column, settings.label_column, settings.encoder, settings.corpus, settings.concepts_text,
            settings.samples, settings.group_column]


def _shown(fn: Callable) -> Callable:
    """Run a handler, showing the project's errors as clear messages in the page and logging anything else."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except InfinconError as err:
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # noqa: BLE001 - shown to the user, logged in full
            log.error("Unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
            raise gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The details are in the server log.",
                           print_exception=False) from err
    return wrapper


class Events:
    """The handlers of one app, over its components ``c``."""

    def __init__(self, c: SimpleNamespace, presets: dict[str, LoadSettings | None],
                 new_workspace: Callable[[], Workspace], world: WorldJob | None) -> None:
        self.c, self.presets, self.new_workspace, self.world = c, presets, new_workspace, world

    @property
    def setup(self) -> list:
        """The setup fields' components, in :data:`~.layout.SETUP_FIELDS` order."""
        return [getattr(self.c, name) for name in SETUP_FIELDS]

    # -- the guard and the views ------------------------------------------------------------------------
    def render(self, ws: Workspace, groups) -> dict:
        """``{component: update}`` for ``groups``, from their views."""
        out = {}
        for group in groups:
            values = VIEWS[group].render(ws)
            if set(values) != set(GROUPS[group]):
                raise RuntimeError(f"The view of {group!r} rendered {sorted(values)}, not {sorted(GROUPS[group])}.")
            out.update({getattr(self.c, name): value for name, value in values.items()})
        return out

    def guard(self, api: str, handler: Callable) -> Callable:
        """``handler`` as the event ``api``: one at a time per workspace, in a transaction, then the views
        that read what it changed, autosaved (see the module docstring)."""
        event = EVENTS[api]

        @_shown
        @functools.wraps(handler)
        def run(ws, *args, **kwargs):
            ws = ws or self.new_workspace()
            with ws.lock, ws.transaction():
                before = ws.aspects()
                sets = handler(ws, *args, **kwargs) or {}
                after = ws.aspects()
                changed = {aspect for aspect in event.changes if before[aspect] != after[aspect]}
                out = {self.c.state: ws, **{getattr(self.c, name): value for name, value in sets.items()}}
                out.update(self.render(ws, [g for g in groups_of(api) if VIEWS[g].reads & changed]))
                ws.autosave()
            return out
        return run

    # -- opening the page: the browser's session id, a restore offer, the world being built ------------
    def world_status(self, preset_name: str | None) -> dict:
        """The build's progress line, the timer that polls it, Load, and the setup fields once it is ready."""
        c, job = self.c, self.world
        if job is None:
            return {c.status_md: gr.Markdown(visible=False), c.timer: gr.Timer(active=False)}
        if not job.done:
            return {c.status_md: gr.Markdown(job.status(), visible=True), c.timer: gr.Timer(active=True),
                    c.load_btn: gr.Button(interactive=preset_name not in (None, next(iter(self.presets))))}
        out = {c.status_md: gr.Markdown(job.status(), visible=job.error is not None), c.timer: gr.Timer(active=False),
               c.load_btn: gr.Button(interactive=True)}
        if job.world is not None and preset_name in (None, next(iter(self.presets))):
            out.update(zip(self.setup, _fields(job.preset()), strict=True))
        return out

    def on_open(self, browser):
        ws = self.new_workspace()
        c, out = self.c, {}
        saved_id = browser.get("session") if isinstance(browser, dict) else None
        try:
            saved = autosave.read(autosave.session_folder(ws.cache_dir, saved_id)) if saved_id else None
        except (ConfigError, OSError):
            saved = None
        if saved is not None:
            ws.id = saved_id
            out = {c.restore_md: gr.Markdown(autosave.describe(saved), visible=True), c.restore_row: gr.Row(visible=True)}
        return ({c.state: ws} | self.render(ws, GROUPS) | out | {c.browser: {"session": ws.id}}
                | self.world_status(None))

    def on_tick(self, preset_name):
        return self.world_status(preset_name)

    def on_preset(self, preset: str):
        settings = self.presets.get(preset) or (self.world.preset() if self.world is not None else None)
        if settings is None:
            raise ConfigError("The Shapes world is still being built: it fills these fields when it is ready.")
        return _fields(settings)

    # -- sessions ---------------------------------------------------------------------------------------
    def on_restore(self, ws, session_id, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
        session_id = autosave.check_session_id((session_id or ws.id).strip())
        saved = autosave.read(autosave.session_folder(ws.cache_dir, session_id))
        if saved is None:
            raise ConfigError(f"There is no saved session {session_id!r} on this server.")
        ws.id = session_id
        replayed = ws.restore(saved, progress=True)
        return {"restore_row": gr.Row(visible=False),
                "restore_md": gr.Markdown(f"Restored your session: {replayed} tuning action(s) replayed.", visible=True)}

    def on_discard(self, ws):
        ws.id = new_id()  # the saved session stays on disk, untouched
        return {"browser": {"session": ws.id}, "restore_md": gr.Markdown(visible=False),
                "restore_row": gr.Row(visible=False)}

    def on_session(self, ws):
        return {"session_id": ws.id}

    # -- loading and distilling ------------------------------------------------------------------------
    def on_load(self, ws, teacher, dataset, config_name, split, image_column, label_column, encoder, corpus,
                concepts_text, samples, group_column, corpus_file=None,
                progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        values = dict(zip(SETUP_FIELDS, (teacher, dataset, config_name, split, image_column, label_column, encoder,
                                         corpus, concepts_text, samples, group_column), strict=True))
        ws.load(_settings(values, corpus_file), progress=True)

    def on_distill(self, ws, nec, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        ws.distill(nec, progress=True)

    def on_pick(self, ws, nec):
        ws.require("sweep")
        ws.pick(nec)

    # -- selecting -------------------------------------------------------------------------------------
    def on_cell(self, ws, evt: gr.SelectData):
        ws.require("session")
        ws.select_cell(_index(evt, 0), _index(evt, 1))

    def on_select(self, ws, concept, class_name):
        ws.select(concept, class_name)

    def on_image(self, ws, evt: gr.SelectData):
        ws.require("session")
        ws.require("selection")
        ws.open_concept_image(_index(evt))

    def on_subset(self, ws, evt: gr.SelectData):
        ws.require("session")
        ws.open_subset(_index(evt))

    def on_finding(self, ws, index):
        """Open the audit's ``index``-th finding: its images, and its (concept, class) selected for tuning,
        with Remove as the edit."""
        ws.open_finding(index)
        return {"action": Action.REMOVE.label}

    def on_finding_row(self, ws, evt: gr.SelectData):
        """A click on a row of the audit's table (see :meth:`on_finding`)."""
        ws.require("session")
        return self.on_finding(ws, _index(evt))

    def on_groups(self, ws, choice):
        ws.set_groups(choice)

    def on_view(self, ws, top_n, sort):
        ws.set_heatmap(top_n, sort)

    def on_add_concept(self, ws, concept):
        ws.add_concepts(concept)
        return {"new_concept": ""}

    # -- tuning ----------------------------------------------------------------------------------------
    def on_preview(self, ws, action, factor, release=None, with_labels=False, alpha=0.0):
        """At once: the edited weights moved, the others held (the refit follows, ``on_preview_refit``)."""
        return {"preview_md": preview_text(ws.preview(*_edit(action, factor, release, with_labels, alpha),
                                                      refit=False))}

    def on_preview_refit(self, ws, action, factor, release=None, with_labels=False, alpha=0.0):
        return {"preview_md": preview_text(ws.preview(*_edit(action, factor, release, with_labels, alpha)))}

    def on_apply(self, ws, action, factor, release=None, with_labels=False, alpha=0.0,
                 progress=gr.Progress()):  # noqa: B008
        """Apply the edit to the selection (a remove holds the proxies it finds at 0, less ``release``)."""
        return {"preview_md": entry_text(ws.apply(*_edit(action, factor, release, with_labels, alpha)))}

    def on_blend(self, ws, alpha, progress=gr.Progress()):  # noqa: B008
        return {"preview_md": entry_text(ws.blend(alpha))}

    def on_undo(self, ws, progress=gr.Progress()):  # noqa: B008
        return {"preview_md": entry_text(ws.move("undo"))}

    def on_redo(self, ws, progress=gr.Progress()):  # noqa: B008
        return {"preview_md": entry_text(ws.move("redo"))}

    def on_jump(self, ws, step, progress=gr.Progress()):  # noqa: B008
        return {"preview_md": entry_text(ws.move("jump", step))}

    def on_import(self, ws, log_file):
        if not log_file:
            raise ConfigError("Drop a tuning log (JSON) in the file box first.")
        kept = ws.import_log(log_file)
        note = f"Imported and replayed {len(ws.session.log)} steps (largest weight gap {ws.session.replay_gap:.2g})."
        if kept is not None:
            note += f" The log it replaced was kept in `{kept}`."
        return {"preview_md": note}

    # -- sharing ---------------------------------------------------------------------------------------
    def on_export(self, ws):
        path = os.path.join(tempfile.mkdtemp(prefix="infincond-log-"), "tuning_log.json")
        ws.session_or_fail().export_log(path)
        return {"log_file": path}

    def on_save(self, ws, folder):
        ws.require("session")
        if on_space():  # a visitor may write only under their own session's folder
            folder = ws.folder / "saved" / "student"
        elif not (folder or "").strip():
            raise ConfigError("Give a folder to save the student into.")
        path = ws.save(folder)
        where = "on the server (use Download as zip to take it with you) " if on_space() else ""
        return {"share_md": f"Saved to `{os.path.abspath(path)}` {where}(model.safetensors, config.json, "
                            "metrics.json, tuning_log.json and the README.md model card)."}

    def on_zip(self, ws):
        return {"zip_file": str(ws.zip())}

    def on_push(self, ws, repo, private, oauth_token: gr.OAuthToken | None = None,
                progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        url = ws.push(repo, push_token(oauth_token), bool(private))
        return {"share_md": f"Pushed: [{url}]({url})"}


def wire(c: SimpleNamespace, presets: dict[str, LoadSettings | None], new_workspace: Callable[[], Workspace],
         world: WorldJob | None) -> None:
    """Attach every event to the layout's components (inside the open ``gr.Blocks``)."""
    e = Events(c, presets, new_workspace, world)
    setup = e.setup

    def on(trigger, handler: Callable, inputs: list, api: str, progress_on=None, *, name: str | bool | None = None,
           show_progress="full"):
        outputs = [c.state, *(getattr(c, n) for n in EVENTS[api].sets),
                   *(getattr(c, n) for g in groups_of(api) for n in GROUPS[g])]
        return trigger(e.guard(api, handler), [c.state, *inputs], outputs, api_name=api if name is None else name,
                       show_progress_on=progress_on, show_progress=show_progress)

    world_outputs = [c.status_md, c.timer, c.load_btn, *setup]
    every = [getattr(c, n) for g in GROUPS for n in GROUPS[g]]
    c.demo.load(_shown(e.on_open), c.browser, [c.state, c.restore_md, c.restore_row, c.browser, *world_outputs, *every],
                api_name=False, show_progress="hidden")
    c.timer.tick(_shown(e.on_tick), c.preset, world_outputs, api_name=False, show_progress="hidden")
    c.preset.change(_shown(e.on_preset), c.preset, setup, api_name="preset")
    on(c.load_btn.click, e.on_load, [*setup, c.corpus_file], "load", [c.config_md])
    on(c.restore_btn.click, e.on_restore, [c.session_id], "restore", [c.restore_md], name=False)
    on(c.restore_api_btn.click, e.on_restore, [c.session_id], "restore", [c.restore_md])
    on(c.discard_btn.click, e.on_discard, [], "discard", name=False)
    on(c.session_btn.click, e.on_session, [], "session")
    on(c.distill_btn.click, e.on_distill, [c.nec], "distill", [c.perf_md])
    on(c.pick_nec.input, e.on_pick, [c.pick_nec], "pick_student", [c.perf_md])
    on(c.heat.select, e.on_cell, [], "select_cell", [c.heat])
    on(c.hidden_btn.click, e.on_select, [c.hidden_concept, c.hidden_class], "select", [c.selection_md])
    on(c.concept_gallery.select, e.on_image, [], "select_image", [c.detail_md])
    on(c.disagreements.select, e.on_subset, [], "open_subset", [c.subset_images])
    on(c.audit_table.select, e.on_finding_row, [], "open_finding", [c.audit_gallery])
    on(c.finding_btn.click, e.on_finding, [c.finding_index], "finding", [c.audit_gallery])
    on(c.group_by.input, e.on_groups, [c.group_by], "set_groups", [c.groups_table])
    on(c.top_n.change, e.on_view, [c.top_n, c.sort], "view", [c.heat])
    on(c.sort.change, e.on_view, [c.top_n, c.sort], "view", [c.heat], name=False)
    on(c.concept_btn.click, e.on_add_concept, [c.new_concept], "add_concept", [c.heat])
    # The what-if shows at once, then what Apply gives once the refit is done.
    edit = [c.action, c.factor, c.proxies, c.with_labels, c.alpha]
    preview = on(c.preview_btn.click, e.on_preview, edit, "preview", [c.preview_md])
    on(preview.success, e.on_preview_refit, edit, "preview_refit",
       show_progress="hidden")  # the at-once answer stays readable ("refitting...") until the refit replaces it
    on(c.apply_btn.click, e.on_apply, edit, "apply", [c.preview_md])
    on(c.alpha_btn.click, e.on_blend, [c.alpha], "blend", [c.preview_md])
    on(c.undo_btn.click, e.on_undo, [], "undo", [c.preview_md])
    on(c.redo_btn.click, e.on_redo, [], "redo", [c.preview_md])
    on(c.jump_btn.click, e.on_jump, [c.jump_step], "jump", [c.preview_md])
    on(c.import_btn.click, e.on_import, [c.log_file], "import_log", [c.preview_md])
    on(c.export_btn.click, e.on_export, [], "export_log", [c.log_file])
    on(c.save_btn.click, e.on_save, [c.save_dir], "save", [c.share_md])
    on(c.zip_btn.click, e.on_zip, [], "download", [c.zip_file])
    on(c.push_btn.click, e.on_push, [c.repo, c.private], "push", [c.share_md])
