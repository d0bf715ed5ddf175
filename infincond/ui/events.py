"""What each event does: change the workspace (through its methods: the UI computes nothing itself), then
return updates for the groups of components that changed. :func:`wire` attaches them to the layout."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr

from ..data import DataConfig
from ..errors import ConfigError
from ..tuning import Action
from . import autosave, views
from .app import EVENT_GROUPS, _guard, _index, push_token, render, view_options
from .layout import ACTIONS, SETUP_FIELDS, group, on_space
from .settings import LoadSettings
from .workspace import Workspace, _new_id
from .world_job import WorldJob


def _settings(values: list, corpus_file) -> LoadSettings:
    fields = dict(zip(SETUP_FIELDS, values, strict=True))
    return LoadSettings((fields["teacher"] or "").strip(), (fields["dataset"] or "").strip(),
                        (fields["encoder"] or "").strip(), fields["config_name"] or None, fields["split"] or None,
                        fields["image_column"] or "auto", fields["label_column"] or "auto",
                        DataConfig.samples if fields["samples"] is None else fields["samples"], fields["corpus"],
                        fields["concepts_text"] or "", corpus_file or None, (fields["group_column"] or "").strip())


def _fields(settings: LoadSettings) -> list:
    return [settings.teacher, settings.dataset, settings.config_name or "", settings.split or "",
            settings.image_column, settings.label_column, settings.encoder, settings.corpus, settings.concepts_text,
            settings.samples, settings.group_column]


class Events:
    """The handlers of one app, over its components ``c``; each returns ``{component: update}``."""

    def __init__(self, c: SimpleNamespace, presets: dict[str, LoadSettings | None],
                 new_workspace: Callable[[], Workspace], world: WorldJob | None) -> None:
        self.c, self.presets, self.new_workspace, self.world = c, presets, new_workspace, world
        self.setup = [getattr(c, name) for name in SETUP_FIELDS]

    def respond(self, ws: Workspace, api: str, n=20, order="any class", groups: tuple[str, ...] | None = None,
                **extra) -> dict:
        """The state, ``extra`` updates (by component name) and the groups ``api`` changes."""
        out = {self.c.state: ws, **{getattr(self.c, name): value for name, value in extra.items()}}
        return out | render(self.c, ws, EVENT_GROUPS[api] if groups is None else groups, n, order)

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
        return self.respond(ws, "load") | out | {c.browser: {"session": ws.id}} | self.world_status(None)

    def on_tick(self, preset_name):
        return self.world_status(preset_name)

    def on_preset(self, name: str):
        settings = self.presets.get(name) or (self.world.preset() if self.world is not None else None)
        if settings is None:
            raise ConfigError("The Shapes world is still being built: it fills these fields when it is ready.")
        return _fields(settings)

    def on_restore(self, ws, session_id, n, order, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        session_id = autosave.check_session_id((session_id or ws.id).strip())
        saved = autosave.read(autosave.session_folder(ws.cache_dir, session_id))
        if saved is None:
            raise ConfigError(f"There is no saved session {session_id!r} on this server.")
        ws.id = session_id
        replayed = ws.restore(saved, progress=True)
        return self.respond(ws, "restore", n, order, restore_row=gr.Row(visible=False),
                            restore_md=gr.Markdown(f"Restored your session: {replayed} tuning action(s) replayed.",
                                                   visible=True))

    def on_discard(self, ws):
        ws = ws or self.new_workspace()
        ws.id = _new_id()  # the saved session stays on disk, untouched
        c = self.c
        return {c.state: ws, c.browser: {"session": ws.id}, c.restore_md: gr.Markdown(visible=False),
                c.restore_row: gr.Row(visible=False)}

    def on_session(self, ws):
        ws = ws or self.new_workspace()
        return {self.c.state: ws, self.c.session_id: ws.id}

    # -- loading and distilling ------------------------------------------------------------------------
    def on_load(self, ws, *args, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
        *values, corpus_file, n, order = args
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.load(_settings(values, corpus_file), progress=True)
        return self.respond(ws, "load", n, order)

    def on_distill(self, ws, nec, n, order, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.distill(nec, progress=True)
        return self.respond(ws, "distill", n, order)

    def on_pick(self, ws, nec, n, order):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.pick(nec)
        return self.respond(ws, "pick_student", n, order)

    # -- selecting -------------------------------------------------------------------------------------
    def _selected(self, ws: Workspace, before: tuple, n, order) -> dict:
        """After a selection: the gallery only when the concept changed, the detail only when the image did."""
        groups = tuple(g for g in EVENT_GROUPS["select"] if (g != "images" or ws.concept != before[0])
                       and (g != "detail" or ws.image != before[1]))
        return self.respond(ws, "select", n, order, groups=groups)

    def on_cell(self, ws, n, order, evt: gr.SelectData):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.require("session")
        before = ws.concept, ws.image
        ws.select_cell(_index(evt, 0), _index(evt, 1), n, order)
        return self._selected(ws, before, n, order)

    def on_select(self, ws, concept, class_name, n, order):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        before = ws.concept, ws.image
        ws.select(concept, class_name)
        return self._selected(ws, before, n, order)

    def on_image(self, ws, n, order, evt: gr.SelectData):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.open_concept_image(_index(evt))
        return self.respond(ws, "select_image", n, order)

    def on_subset(self, ws, n, order, evt: gr.SelectData):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.open_subset(_index(evt))
        return self.respond(ws, "open_subset", n, order)

    def on_finding(self, ws, index, top_n, sort):
        """Open the audit's ``index``-th finding: its images, and its (concept, class) selected for tuning,
        with Remove as the edit."""
        ws = ws or self.new_workspace()
        n, order = view_options(top_n, sort)
        ws.require("session")
        ws.open_finding(index)
        return self.respond(ws, "open_finding", n, order, action=Action.REMOVE.label)

    def on_finding_row(self, ws, top_n, sort, evt: gr.SelectData):
        """A click on a row of the audit's table (see :meth:`on_finding`)."""
        (ws or self.new_workspace()).require("session")
        return self.on_finding(ws, _index(evt), top_n, sort)

    def on_groups(self, ws, choice, n, order):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.set_groups(choice)
        return self.respond(ws, "set_groups", n, order)

    def on_view(self, ws, n, order):
        ws = ws or self.new_workspace()
        return self.respond(ws, "view", *view_options(n, order))

    def on_add_concept(self, ws, text, n, order):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        ws.add_concepts(text)
        return self.respond(ws, "add_concept", n, order, new_concept="")

    # -- tuning ----------------------------------------------------------------------------------------
    def on_preview(self, ws, action, factor, release=None, with_labels=False, alpha=0.0):
        """At once: the edited weights moved, the others held (the refit follows, ``on_preview_refit``)."""
        ws = ws or self.new_workspace()
        return views.preview_text(ws.preview(*edit_args(action, factor, release, with_labels, alpha), refit=False))

    def on_preview_refit(self, ws, action, factor, release=None, with_labels=False, alpha=0.0):
        ws = ws or self.new_workspace()
        return views.preview_text(ws.preview(*edit_args(action, factor, release, with_labels, alpha), refit=True))

    def _moved(self, ws: Workspace, api: str, top_n, sort, entry) -> dict:
        """After an action that moves the student (apply, blend, undo, redo, jump): what it did, and the views."""
        n, order = view_options(top_n, sort)
        return self.respond(ws, api, n, order, preview_md=views.entry_text(entry))

    def on_apply(self, ws, action, factor, top_n, sort, release=None, with_labels=False, alpha=0.0,
                 progress=gr.Progress()):  # noqa: B008 - Gradio's pattern
        """Apply the edit to the selection (a remove holds the proxies it finds, less ``release``)."""
        ws = ws or self.new_workspace()
        view_options(top_n, sort)
        return self._moved(ws, "apply", top_n, sort, ws.apply(*edit_args(action, factor, release, with_labels, alpha)))

    def on_blend(self, ws, alpha, top_n, sort, progress=gr.Progress()):  # noqa: B008
        ws = ws or self.new_workspace()
        view_options(top_n, sort)
        return self._moved(ws, "blend", top_n, sort, ws.blend(alpha))

    def on_undo(self, ws, top_n, sort, progress=gr.Progress()):  # noqa: B008
        ws = ws or self.new_workspace()
        view_options(top_n, sort)
        return self._moved(ws, "undo", top_n, sort, ws.move("undo"))

    def on_redo(self, ws, top_n, sort, progress=gr.Progress()):  # noqa: B008
        ws = ws or self.new_workspace()
        view_options(top_n, sort)
        return self._moved(ws, "redo", top_n, sort, ws.move("redo"))

    def on_jump(self, ws, step, top_n, sort, progress=gr.Progress()):  # noqa: B008
        ws = ws or self.new_workspace()
        view_options(top_n, sort)
        return self._moved(ws, "jump", top_n, sort, ws.move("jump", step))

    def on_import(self, ws, file, n, order):
        ws = ws or self.new_workspace()
        n, order = view_options(n, order)
        if not file:
            raise ConfigError("Drop a tuning log (JSON) in the file box first.")
        kept = ws.import_log(file)
        note = f"Imported and replayed {len(ws.session.log)} steps (largest weight gap {ws.session.replay_gap:.2g})."
        if kept is not None:
            note += f" The log it replaced was kept in `{kept}`."
        return self.respond(ws, "import_log", n, order, preview_md=note)

    # -- sharing ---------------------------------------------------------------------------------------
    def on_export(self, ws):
        ws = ws or self.new_workspace()
        ws.require("session")
        path = os.path.join(tempfile.mkdtemp(prefix="infincond-log-"), "tuning_log.json")
        ws.session.export_log(path)
        return path

    def on_save(self, ws, folder):
        ws = ws or self.new_workspace()
        ws.require("session")
        if on_space():  # a visitor may write only under their own session's folder
            folder = ws.folder / "saved" / "student"
        elif not (folder or "").strip():
            raise ConfigError("Give a folder to save the student into.")
        path = ws.save(folder)
        where = "on the server (use Download as zip to take it with you) " if on_space() else ""
        return (f"Saved to `{os.path.abspath(path)}` {where}(model.safetensors, config.json, metrics.json, "
                "tuning_log.json and the README.md model card).")

    def on_zip(self, ws):
        return str((ws or self.new_workspace()).zip())

    def on_push(self, ws, repo, private, oauth_token: gr.OAuthToken | None = None,
                progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
        url = (ws or self.new_workspace()).push(repo, push_token(oauth_token), bool(private))
        return f"Pushed: [{url}]({url})"


#: The label blend a "fix with labels" remove uses while the alpha slider is at 0.
FIX_ALPHA = 0.5


def edit_args(action, factor, release=None, with_labels=False, alpha=0.0) -> tuple:
    """(action, factor, released proxies, label blend) for the workspace, from the tuning panel's values."""
    alpha = alpha or 0.0
    return ACTIONS.get(action, action), factor, release, ((alpha if alpha > 0 else FIX_ALPHA) if with_labels else None)


def wire(c: SimpleNamespace, presets: dict[str, LoadSettings | None], new_workspace: Callable[[], Workspace],
         world: WorldJob | None) -> None:
    """Attach every event to the layout's components (inside the open ``gr.Blocks``)."""
    e = Events(c, presets, new_workspace, world)
    sel, setup = [c.top_n, c.sort], e.setup

    def out(api: str, *extra) -> list:
        return [c.state, *extra, *group(c, *EVENT_GROUPS[api])]

    def on(trigger, handler, inputs, outputs, api, progress_on=None, show_progress="full"):
        return trigger(_guard(handler), inputs, outputs, api_name=api, show_progress_on=progress_on,
                       show_progress=show_progress)

    world_outputs = [c.status_md, c.timer, c.load_btn, *setup]
    c.demo.load(e.on_open, c.browser, [c.restore_md, c.restore_row, c.browser, *world_outputs, *out("load")],
                api_name=False, show_progress="hidden")
    c.timer.tick(e.on_tick, c.preset, world_outputs, api_name=False, show_progress="hidden")
    on(c.preset.change, e.on_preset, c.preset, setup, "preset")
    on(c.load_btn.click, e.on_load, [c.state, *setup, c.corpus_file, *sel], out("load"), "load", [c.config_md])
    on(c.restore_btn.click, e.on_restore, [c.state, c.session_id, *sel], out("restore", c.restore_md, c.restore_row),
       False, [c.restore_md])
    on(c.discard_btn.click, e.on_discard, c.state, [c.state, c.browser, c.restore_md, c.restore_row], False)
    on(c.restore_api_btn.click, e.on_restore, [c.state, c.session_id, *sel],
       out("restore", c.restore_md, c.restore_row), "restore", [c.restore_md])
    on(c.session_btn.click, e.on_session, c.state, [c.state, c.session_id], "session")
    on(c.distill_btn.click, e.on_distill, [c.state, c.nec, *sel], out("distill"), "distill", [c.perf_md])
    on(c.pick_nec.input, e.on_pick, [c.state, c.pick_nec, *sel], out("pick_student"), "pick_student", [c.perf_md])
    on(c.heat.select, e.on_cell, [c.state, *sel], out("select_cell"), "select_cell", [c.heat])
    on(c.hidden_btn.click, e.on_select, [c.state, c.hidden_concept, c.hidden_class, *sel], out("select"),
       "select", [c.selection_md])
    on(c.concept_gallery.select, e.on_image, [c.state, *sel], out("select_image"), "select_image", [c.detail_md])
    on(c.disagreements.select, e.on_subset, [c.state, *sel], out("open_subset"), "open_subset", [c.subset_images])
    on(c.audit_table.select, e.on_finding_row, [c.state, *sel], out("open_finding", c.action), "open_finding",
       [c.audit_gallery])
    on(c.finding_btn.click, e.on_finding, [c.state, c.finding_index, *sel], out("open_finding", c.action), "finding",
       [c.audit_gallery])
    on(c.group_by.input, e.on_groups, [c.state, c.group_by, *sel], out("set_groups"), "set_groups", [c.groups_table])
    for control in (c.top_n, c.sort):
        on(control.change, e.on_view, [c.state, *sel], out("view"), "view", [c.heat])
    on(c.concept_btn.click, e.on_add_concept, [c.state, c.new_concept, *sel], out("add_concept", c.new_concept),
       "add_concept", [c.heat])
    # The what-if shows at once, then what Apply gives once the refit is done.
    what = [c.action, c.factor, c.proxies, c.with_labels, c.alpha]
    preview = on(c.preview_btn.click, e.on_preview, [c.state, *what], c.preview_md, "preview", [c.preview_md])
    on(preview.success, e.on_preview_refit, [c.state, *what], c.preview_md, "preview_refit",
       show_progress="hidden")  # the at-once answer stays readable ("refitting...") until the refit replaces it
    moves = {"apply": (c.apply_btn, e.on_apply, [c.action, c.factor, *sel, c.proxies, c.with_labels, c.alpha]),
             "blend": (c.alpha_btn, e.on_blend, [c.alpha, *sel]), "undo": (c.undo_btn, e.on_undo, sel),
             "redo": (c.redo_btn, e.on_redo, sel), "jump": (c.jump_btn, e.on_jump, [c.jump_step, *sel])}
    for api, (button, handler, inputs) in moves.items():
        on(button.click, handler, [c.state, *inputs], out(api, c.preview_md), api, [c.preview_md])
    on(c.import_btn.click, e.on_import, [c.state, c.log_file, *sel], out("import_log", c.preview_md), "import_log",
       [c.preview_md])
    on(c.export_btn.click, e.on_export, c.state, c.log_file, "export_log", [c.log_file])
    on(c.save_btn.click, e.on_save, [c.state, c.save_dir], c.share_md, "save", [c.share_md])
    on(c.zip_btn.click, e.on_zip, c.state, c.zip_file, "download", [c.zip_file])
    on(c.push_btn.click, e.on_push, [c.state, c.repo, c.private], c.share_md, "push", [c.share_md])
