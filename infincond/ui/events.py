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
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from ..errors import InfinconError
from ..extract.runtime import available_cores
from .derived import ASPECTS
from .handlers import Handlers
from .layout import GROUPS
from .settings import LoadSettings
from .views import VIEWS
from .workspace import Workspace
from .world_job import WorldJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """What an event may change: aspects of the workspace (:data:`~.derived.ASPECTS`; the views that read
    them are its outputs), and other components it sets itself, by name. ``heavy``: a long job (seconds to
    minutes of CPU), run in the heavy lane (:func:`heavy_limit` at once, every session together)."""

    changes: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    heavy: bool = False


STUDENT = ("student", "weights", "selection", "concept", "image", "subset", "finding")  # another student
SELECTION = ("selection", "concept", "image")
MOVED = ("weights", "finding")  # the student's weights moved (the audit's first finding may change with them)
#: Every event of the app, by its API name.
EVENTS = {
    "load": Event(ASPECTS, heavy=True), "restore": Event(ASPECTS, ("restore_md", "restore_row"), heavy=True),
    "distill": Event(STUDENT, heavy=True), "pick_student": Event(STUDENT),
    "import_log": Event(STUDENT, ("preview_md",), heavy=True),
    "select_cell": Event(SELECTION), "select": Event(SELECTION),
    "add_concept": Event(("concepts", *SELECTION), ("new_concept",)),
    "select_image": Event(("image",)), "open_subset": Event(("subset",)), "view": Event(("heatmap",)),
    "image": Event(("image",)), "subset": Event(("subset",)),
    "open_finding": Event(("finding", *SELECTION), ("action",)), "finding": Event(("finding", *SELECTION), ("action",)),
    "set_groups": Event(("groups",)),
    "apply": Event(MOVED, ("preview_md",)), "blend": Event(MOVED, ("preview_md",)),
    "undo": Event(MOVED, ("preview_md",)), "redo": Event(MOVED, ("preview_md",)), "jump": Event(MOVED, ("preview_md",)),
    "preview": Event(sets=("preview_md",)), "preview_refit": Event(sets=("preview_md",)),
    "export_log": Event(sets=("log_file",)), "save": Event(sets=("share_md",), heavy=True),
    "download": Event(sets=("zip_file",), heavy=True), "push": Event(sets=("share_md",), heavy=True),
    "session": Event(sets=("session_id",)),
    "discard": Event(sets=("browser", "restore_md", "restore_row")),
}
#: Outputs the API does not return (layout and buttons): not among :func:`outputs_of`.
NOT_RETURNED = {"restore_row", "browser", *GROUPS["controls"], *GROUPS["edit_controls"], *GROUPS["steps"]}


def heavy_limit(cores: int | None = None) -> int:
    """How many long jobs (load, distil, import, save, push) run at once, every session together: one per
    four cores, at least one. A long job uses every core it is given (torch's and BLAS's threads), so two at
    once on a small machine only halve each other while the light events (select, preview, undo, ...),
    which run in their own lanes, wait for a core; the others queue, and the page shows their place."""
    return max(1, (cores or available_cores()) // 4)


def groups_of(api: str) -> tuple[str, ...]:
    """The groups of components an event may re-render: the views that read what it may change."""
    changes = set(EVENTS[api].changes)
    return tuple(group for group in GROUPS if VIEWS[group].reads & changes)


def outputs_of(api: str) -> list[str]:
    """The names of an event's outputs, in the order ``gradio_client`` returns them (tests read them)."""
    names = [*EVENTS[api].sets, *(name for group in groups_of(api) for name in GROUPS[group])]
    return [name for name in names if name not in NOT_RETURNED]


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
    """The guard and the views of one app, over its components ``c``: new workspaces come from
    ``new_workspace``."""

    def __init__(self, c: SimpleNamespace, new_workspace: Callable[[], Workspace]) -> None:
        self.c, self.new_workspace = c, new_workspace

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


def wire(c: SimpleNamespace, presets: dict[str, LoadSettings | None], new_workspace: Callable[[], Workspace],
         world: WorldJob | None) -> None:
    """Attach every event to the layout's components (inside the open ``gr.Blocks``)."""
    events = Events(c, new_workspace)
    e = Handlers(c, presets, new_workspace, world, events.render)
    setup = e.setup

    def on(trigger, handler: Callable, inputs: list, api: str, progress_on=None, *, name: str | bool | None = None,
           show_progress="full"):
        outputs = [c.state, *(getattr(c, n) for n in EVENTS[api].sets),
                   *(getattr(c, n) for g in groups_of(api) for n in GROUPS[g])]
        lane = {"concurrency_id": "heavy", "concurrency_limit": heavy_limit()} if EVENTS[api].heavy else {}
        return trigger(events.guard(api, handler), [c.state, *inputs], outputs, api_name=api if name is None else name,
                       show_progress_on=progress_on, show_progress=show_progress, **lane)

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
    # A click's event data comes from the page only: the API opens the same things by name or by index.
    on(c.heat.select, e.on_cell, [], "select_cell", [c.heat], name=False)
    on(c.hidden_btn.click, e.on_select, [c.hidden_concept, c.hidden_class], "select", [c.selection_md])
    on(c.concept_gallery.select, e.on_image_click, [], "select_image", [c.detail_md], name=False)
    on(c.image_btn.click, e.on_image, [c.image_index], "image", [c.detail_md])
    on(c.disagreements.select, e.on_subset_click, [], "open_subset", [c.subset_images], name=False)
    on(c.subset_btn.click, e.on_subset, [c.subset_index], "subset", [c.subset_images])
    on(c.audit_table.select, e.on_finding_row, [], "open_finding", [c.audit_gallery], name=False)
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
