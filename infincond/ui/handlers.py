"""The handlers of the app's events: each changes the workspace through its methods (the UI computes
nothing itself) and returns only the components it sets itself, by name; :mod:`.events` runs them in its
guard, which re-renders the views whose inputs changed. Every parameter is named: the API's too."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr

from ..checks import check_integer
from ..errors import ConfigError
from ..tuning import Action
from . import autosave
from .layout import ACTIONS, GROUPS, on_space
from .messages import entry_text, preview_text
from .settings import SETUP_FIELDS, LoadSettings
from .workspace import Workspace, new_id
from .world_job import WorldJob


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


class Handlers:
    """The handlers of one app, over its components ``c``; ``render(ws, groups)`` gives the views' updates."""

    def __init__(self, c: SimpleNamespace, presets: dict[str, LoadSettings | None],
                 new_workspace: Callable[[], Workspace], world: WorldJob | None, render: Callable) -> None:
        self.c, self.presets, self.new_workspace, self.world, self.render = c, presets, new_workspace, world, render

    @property
    def setup(self) -> list:
        """The setup fields' components, in :data:`~.settings.SETUP_FIELDS` order."""
        return [getattr(self.c, name) for name in SETUP_FIELDS]

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
            out.update(zip(self.setup, job.preset().fields(), strict=True))
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
            out = {c.restore_md: gr.Markdown(autosave.describe(saved), visible=True),
                   c.restore_row: gr.Row(visible=True)}
        return ({c.state: ws} | self.render(ws, GROUPS) | out | {c.browser: {"session": ws.id}}
                | self.world_status(None))

    def on_tick(self, preset_name):
        return self.world_status(preset_name)

    def on_preset(self, preset: str):
        settings = self.presets.get(preset) or (self.world.preset() if self.world is not None else None)
        if settings is None:
            raise ConfigError("The Shapes world is still being built: it fills these fields when it is ready.")
        return settings.fields()

    # -- sessions ---------------------------------------------------------------------------------------
    def on_restore(self, ws, session_id, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
        session_id = autosave.check_session_id((session_id or ws.id).strip())
        saved = autosave.read(autosave.session_folder(ws.cache_dir, session_id))
        if saved is None:
            raise ConfigError(f"There is no saved session {session_id!r} on this server.")
        ws.id = session_id
        replayed = ws.restore(saved, progress=True)
        return {
            "restore_row": gr.Row(visible=False),
            "restore_md": gr.Markdown(f"Restored your session: {replayed} tuning action(s) replayed.", visible=True),
        }

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
        ws.load(LoadSettings.from_fields(values, corpus_file), progress=True)

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

    def on_image(self, ws, index):
        """Open the ``index``-th image of the selected concept's gallery."""
        ws.open_concept_image(index)

    def on_image_click(self, ws, evt: gr.SelectData):
        ws.require("session")
        ws.require("selection")
        ws.open_concept_image(_index(evt))

    def on_subset(self, ws, index):
        """Open the ``index``-th disagreement subset (largest first)."""
        ws.open_subset(index)

    def on_subset_click(self, ws, evt: gr.SelectData):
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
        gap = ws.session.replay_gap
        note = f"Imported and replayed {len(ws.session.log)} steps " + (
            f"(largest weight gap {gap:.2g})." if gap is not None else "(a journal: no final weights to check).")
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


