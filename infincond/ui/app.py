"""The Gradio Blocks app: setup, six coordinated views and Share. Every event has a stable ``api_name``
(so ``gradio_client`` can drive the whole workflow) and refreshes every view from the user's own
:class:`Workspace`, kept in ``gr.State``: two sessions never see each other's students."""

import contextlib
import functools
import logging
import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..checks import check_choice, check_integer, check_number
from ..data import DataConfig
from ..distill import DistillConfig
from ..errors import ConfigError, InfinconError
from ..features import default_cache_dir
from ..tuning import Action
from . import views
from .workspace import CORPUS_CHOICES, LoadSettings, Workspace

log = logging.getLogger(__name__)

CIFAR10 = LoadSettings(teacher="aaraki/vit-base-patch16-224-in21k-finetuned-cifar10", dataset="uoft-cs/cifar10",
                       encoder="openai/clip-vit-base-patch32", config_name="plain_text", split="test", samples=1000)
SORTS = ("any class", "selected class")
ACTIONS = {action.label: action.value for action in Action}
CSS = """
.view {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px;}
.view h3 {margin-top: 0}
"""


def shapes_preset(world, samples: int = 600) -> LoadSettings:
    """The offline Shapes world as a preset: its dataset, teacher and encoder, and its vocabulary typed in."""
    return LoadSettings(teacher=str(world.teacher), dataset=str(world.dataset), encoder=str(world.encoder),
                        split="train", samples=samples, corpus="builtin+typed", concepts_text=", ".join(world.concepts))


def _guard(fn: Callable) -> Callable:
    """Run an event inside its workspace's transaction, so that a refused event changes nothing, and show
    the project's errors as clear messages in the page; log anything unexpected."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ws = next((a for a in args if isinstance(a, Workspace)), None)
        try:
            with ws.transaction() if ws is not None else contextlib.nullcontext():
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


def on_space() -> bool:
    """True when the app runs as a Hugging Face Space (then visitors save only under their own folder)."""
    return bool(os.environ.get("SPACE_ID"))


def _index(evt: gr.SelectData | None, axis: int = 0) -> int:
    """The row (axis 0) or column (axis 1) of a select event, as an int."""
    if evt is None:
        raise ConfigError("This event needs a selection (click a cell, a row or an image).")
    index = evt.index if isinstance(evt.index, (list, tuple)) else (evt.index, 0)
    return check_integer("selected index", index[axis], 0)


def build_app(presets: dict[str, LoadSettings] | None = None, cache_dir: str | os.PathLike | None = None) -> gr.Blocks:
    """The app. ``presets`` fill the setup fields (the first is the default); ``cache_dir`` holds features."""
    presets = dict(presets or {})
    presets.setdefault("CIFAR-10 from the Hub", CIFAR10)
    default = next(iter(presets.values()))

    with gr.Blocks(title="InFiConD") as demo:
        state = gr.State(None)
        gr.Markdown("# InFiConD · interactive no-code fine-tuning with concept-based distillation\n"
                    "Distil an image classifier into a sparse linear model over text concepts, inspect it, tune it, share it.")
        # -- setup and 1. configuration ---------------------------------------------------------
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, elem_id="view-setup", elem_classes="view"):
                gr.Markdown("### Setup")
                preset = gr.Dropdown(list(presets), value=next(iter(presets)), label="Preset")
                teacher = gr.Textbox(default.teacher, label="Teacher (repo id or path)")
                dataset = gr.Textbox(default.dataset, label="Dataset (repo id or path)")
                with gr.Row():
                    config_name = gr.Textbox(default.config_name or "", label="Config")
                    split = gr.Textbox(default.split or "", label="Split")
                with gr.Row():
                    image_column = gr.Textbox(default.image_column, label="Image column")
                    label_column = gr.Textbox(default.label_column, label="Label column")
                encoder = gr.Textbox(default.encoder, label="Dual encoder (CLIP-style)")
                corpus = gr.Radio(list(CORPUS_CHOICES), value=default.corpus, label="Concepts")
                concepts_text = gr.Textbox(default.concepts_text, label="Your concepts (comma-separated)", lines=2)
                corpus_file = gr.File(label="…or a concept file (one per line)", file_types=[".txt"], type="filepath")
                with gr.Row():
                    samples = gr.Number(default.samples, label="Sample size", precision=0, minimum=20)
                    nec = gr.Slider(1, 40, value=DistillConfig().nec, step=1, label="NEC (concepts per class)")
                with gr.Row():
                    load_btn = gr.Button("Load", variant="primary")
                    distill_btn = gr.Button("Distil", variant="primary", interactive=False)
            with gr.Column(scale=3, elem_id="view-configuration", elem_classes="view"):
                gr.Markdown("### 1 · Configuration")
                config_md = gr.Markdown()
                class_table = gr.Dataframe(label="Classes", interactive=False, max_height=260)
                samples_gallery = gr.Gallery(label="Samples", columns=6, height=220, allow_preview=False)
        # -- 2. performance, 3. heatmap ---------------------------------------------------------
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, elem_id="view-performance", elem_classes="view"):
                gr.Markdown("### 2 · Student performance")
                perf_md = gr.Markdown()
                # No `height=` on native plots: in Gradio 6.31 it turns their axes ordinal (measured).
                class_bars = gr.BarPlot(x="bar", y="score", color="model", label="Per class (accuracy, or agreement)",
                                        y_lim=[0, 1], x_title="class", x_label_angle=-40,
                                        color_map={"teacher": "#94a3b8", "student": "#f97316"})
                nec_curve = gr.LinePlot(x="NEC", y="fidelity", label="Fidelity vs NEC: pick a student")
                with gr.Row():
                    pick_nec = gr.Dropdown([], label="Student (NEC target)", interactive=True)
                disagreements = gr.Dataframe(label="Where student and teacher disagree (click a row to open it)",
                                             interactive=False, max_height=200, elem_id="disagreements")
                subset_images = gr.Gallery(label="Disagreement subset", columns=8, height=160, allow_preview=True,
                                           elem_id="subset-gallery")
            with gr.Column(scale=1, elem_id="view-heatmap", elem_classes="view"):
                gr.Markdown("### 3 · Concept-class influence")
                with gr.Row():
                    top_n = gr.Slider(5, 60, value=20, step=1, label="Top concepts")
                    sort = gr.Radio(["any class", "selected class"], value="any class", label="Sort by")
                heat = gr.Dataframe(label="Influence = weight x mean presence on the class's images (click a cell)",
                                    interactive=False, max_height=560, elem_id="heatmap")
        # -- 4. images, 5. tuning ---------------------------------------------------------------
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, elem_id="view-images", elem_classes="view"):
                gr.Markdown("### 4 · Images")
                images_md = gr.Markdown()
                concept_gallery = gr.Gallery(columns=6, height=250, allow_preview=False, elem_id="concept-gallery")
                with gr.Row():
                    detail_image = gr.Image(label="Image", height=220, interactive=False)
                    with gr.Column():
                        detail_md = gr.Markdown()
                        detail_table = gr.Dataframe(label="Top contributing concepts", interactive=False)
            with gr.Column(scale=1, elem_id="view-tuning", elem_classes="view"):
                gr.Markdown("### 5 · Tuning")
                selection_md = gr.Markdown()
                action = gr.Radio(list(ACTIONS), value="Down-tune", label="Edit")
                factor = gr.Slider(1.1, 10, value=2, step=0.1, label="Factor (up / down)")
                with gr.Row():
                    preview_btn = gr.Button("What if?", interactive=False)
                    apply_btn = gr.Button("Apply (refit)", variant="primary", interactive=False)
                preview_md = gr.Markdown()
                with gr.Row():
                    alpha = gr.Slider(0, 1, value=0, step=0.05, label="Blend labels into the target (alpha)")
                    alpha_btn = gr.Button("Refit with this blend", interactive=False)
                edits = gr.Dataframe(label="Constraints in force", interactive=False, max_height=180)
        # -- 6. provenance, share ---------------------------------------------------------------
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, elem_id="view-provenance", elem_classes="view"):
                gr.Markdown("### 6 · Provenance")
                log_plot = gr.LinePlot(x="step", y="value", color="metric", label="Metrics after each step")
                log_table = gr.Dataframe(interactive=False, max_height=260, elem_id="provenance-log")
                with gr.Row():
                    undo_btn = gr.Button("Undo", interactive=False)
                    redo_btn = gr.Button("Redo", interactive=False)
                    jump_step = gr.Number(0, label="Step", precision=0, minimum=0)
                    jump_btn = gr.Button("Jump to step", interactive=False)
                with gr.Row():
                    export_btn = gr.Button("Export log", interactive=False)
                    log_file = gr.File(label="Log (JSON): download, or drop one to import", file_types=[".json"],
                                       type="filepath")
                    import_btn = gr.Button("Import log", interactive=False)
            with gr.Column(scale=2, elem_id="view-share", elem_classes="view"):
                gr.Markdown("### Share")
                # On a Space, visitors save under their own session folder only (and take the zip).
                save_dir = gr.Textbox("infincond-student", label="Save to folder", elem_id="save-dir",
                                      visible=not on_space())
                save_btn = gr.Button("Save on the server" if on_space() else "Save locally", interactive=False)
                zip_btn = gr.Button("Download as zip", interactive=False)
                zip_file = gr.File(label="Student (zip)", elem_id="student-zip")
                repo = gr.Textbox(label="Hub repo (user/name)", elem_id="push-repo")
                private = gr.Checkbox(False, label="Private")
                if os.environ.get("SPACE_ID"):
                    gr.LoginButton()
                push_btn = gr.Button("Push to the Hub", interactive=False)
                share_md = gr.Markdown()

        setup_fields = [teacher, dataset, config_name, split, image_column, label_column, encoder, corpus,
                        concepts_text, samples]
        views_out = [config_md, class_table, samples_gallery, perf_md, class_bars, nec_curve, pick_nec, disagreements,
                     subset_images, heat, images_md, concept_gallery, detail_image, detail_md, detail_table,
                     selection_md, edits, log_plot, log_table, distill_btn, preview_btn, apply_btn, alpha_btn,
                     undo_btn, redo_btn, jump_btn, export_btn, import_btn, save_btn, zip_btn, push_btn]

        def render(ws: Workspace | None, n: int = 20, order: str = "any class") -> list:
            ws = ws or Workspace()
            has_features, has_session = ws.features is not None, ws.session is not None
            selected = has_session and ws.concept is not None and ws.class_id is not None
            config = views.configuration(ws)
            perf = views.performance(ws)
            choices = [p.nec_target for p in ws.sweep]
            images = views.concept_images(ws)
            detail = views.image_detail(ws)
            prov = views.provenance(ws)
            return [*config, perf[0], perf[1], perf[2], gr.Dropdown(choices=choices, value=ws.nec), perf[3],
                    views.subset_gallery(ws), views.heatmap(ws, int(n), order), *images, *detail,
                    views.selection(ws), views.edits_table(ws), prov[1], prov[0],
                    gr.Button(interactive=has_features), gr.Button(interactive=selected), gr.Button(interactive=selected),
                    gr.Button(interactive=has_session), gr.Button(interactive=has_session and ws.session.can_undo),
                    gr.Button(interactive=has_session and ws.session.can_redo), gr.Button(interactive=has_session),
                    gr.Button(interactive=has_session), gr.Button(interactive=has_features),
                    gr.Button(interactive=has_session), gr.Button(interactive=has_session),
                    gr.Button(interactive=has_session)]

        # -- handlers: update the workspace, then re-render every view -------------------------------
        def view_options(n, order) -> tuple[int, str]:
            return check_integer("top concepts", n, 1, 500), check_choice("sort", order, SORTS)

        @_guard
        def on_preset(name: str):
            s = presets[check_choice("preset", name, list(presets))]
            return [s.teacher, s.dataset, s.config_name or "", s.split or "", s.image_column, s.label_column,
                    s.encoder, s.corpus, s.concepts_text, s.samples]

        @_guard
        def on_load(ws, teacher_, dataset_, config_, split_, image_col, label_col, encoder_, corpus_, text, samples_,
                    file_, n, order, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
            ws = ws or Workspace()
            n, order = view_options(n, order)
            settings = LoadSettings((teacher_ or "").strip(), (dataset_ or "").strip(), (encoder_ or "").strip(),
                                    config_ or None, split_ or None, image_col or "auto", label_col or "auto",
                                    DataConfig.samples if samples_ is None else samples_, corpus_, text or "",
                                    file_ or None)
            ws.load(settings, cache_dir=cache_dir, progress=True)
            return [ws, *render(ws, n, order)]

        @_guard
        def on_distill(ws, nec_, n, order, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.distill(nec_, progress=True)
            return [ws, *render(ws, n, order)]

        @_guard
        def on_pick(ws, nec_, n, order):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.pick(nec_)
            return [ws, *render(ws, n, order)]

        @_guard
        def on_cell(ws, n, order, evt: gr.SelectData):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.require("session")
            ws.select_cell(_index(evt, 0), _index(evt, 1), n, order)
            return [ws, *render(ws, n, order)]

        @_guard
        def on_select(ws, concept: str, class_name: str, n, order):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.select(concept, class_name)
            return [ws, *render(ws, n, order)]

        @_guard
        def on_image(ws, n, order, evt: gr.SelectData):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.open_concept_image(_index(evt))
            return [ws, *render(ws, n, order)]

        @_guard
        def on_subset(ws, n, order, evt: gr.SelectData):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.open_subset(_index(evt))
            return [ws, *render(ws, n, order)]

        @_guard
        def on_preview(ws, action_, factor_):
            ws = ws or Workspace()
            return views.preview_text(ws.preview(ACTIONS.get(action_, action_), factor_))

        @_guard
        def on_apply(ws, action_, factor_, n, order, progress=gr.Progress()):  # noqa: B008 - Gradio's pattern
            ws = ws or Workspace()
            n, order = view_options(n, order)
            entry = ws.apply(ACTIONS.get(action_, action_), factor_)
            return [ws, views.preview_text_entry(entry), *render(ws, n, order)]

        @_guard
        def on_alpha(ws, alpha_, n, order):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.require("session")
            entry = ws.session.set_label_weight(check_number("alpha", alpha_, 0.0, 1.0))
            return [ws, views.preview_text_entry(entry), *render(ws, n, order)]

        @_guard
        def on_history(which: str, ws, step, n, order):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            ws.require("session")
            if which == "jump":
                entry = ws.session.jump(check_integer("step", step, 0))
            else:
                entry = ws.session.undo() if which == "undo" else ws.session.redo()
            return [ws, views.preview_text_entry(entry), *render(ws, n, order)]

        @_guard
        def on_export(ws):
            ws = ws or Workspace()
            ws.require("session")
            path = os.path.join(tempfile.mkdtemp(prefix="infincond-log-"), "tuning_log.json")
            ws.session.export_log(path)
            return path

        @_guard
        def on_import(ws, file_, n, order):
            ws = ws or Workspace()
            n, order = view_options(n, order)
            if not file_:
                raise ConfigError("Drop a tuning log (JSON) in the file box first.")
            kept = ws.import_log(file_, keep_dir=_session_folder(ws, "replaced-logs"))
            gap = ws.session.replay_gap
            note = f"Imported and replayed {len(ws.session.log)} steps (largest weight gap {gap:.2g})."
            if kept is not None:
                note += f" The log it replaced was kept in `{kept}`."
            return [ws, note, *render(ws, n, order)]

        @_guard
        def on_save(ws, folder):
            ws = ws or Workspace()
            ws.require("session")
            if on_space():  # a visitor may write only under their own session's folder
                folder = _session_folder(ws, "saved") / "student"
            elif not (folder or "").strip():
                raise ConfigError("Give a folder to save the student into.")
            path = ws.save(folder)
            where = "on the server (use Download as zip to take it with you)" if on_space() else ""
            return (f"Saved to `{os.path.abspath(path)}` {where}(model.safetensors, config.json, metrics.json, "
                    "tuning_log.json and the README.md model card).")

        @_guard
        def on_zip(ws):
            ws = ws or Workspace()
            return str(ws.zip())

        @_guard
        def on_push(ws, repo_, private_, oauth_token: gr.OAuthToken | None = None,
                    progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's pattern
            ws = ws or Workspace()
            url = ws.push(repo_, push_token(oauth_token), bool(private_))
            return f"Pushed: [{url}]({url})"

        def _session_folder(ws: Workspace, kind: str) -> Path:
            return Path(cache_dir or default_cache_dir()) / "sessions" / ws.id / kind

        # -- wiring -----------------------------------------------------------------------------
        sel = [top_n, sort]
        preset.change(on_preset, preset, setup_fields, api_name="preset")
        load_btn.click(on_load, [state, *setup_fields, corpus_file, *sel], [state, *views_out], api_name="load")
        distill_btn.click(on_distill, [state, nec, *sel], [state, *views_out], api_name="distill")
        pick_nec.input(on_pick, [state, pick_nec, *sel], [state, *views_out], api_name="pick_student")
        heat.select(on_cell, [state, *sel], [state, *views_out], api_name="select_cell")
        hidden_concept, hidden_class = gr.Textbox(visible=False), gr.Textbox(visible=False)
        hidden_btn = gr.Button(visible=False)
        hidden_btn.click(on_select, [state, hidden_concept, hidden_class, *sel], [state, *views_out], api_name="select")
        for control in (top_n, sort):
            control.change(_guard(lambda ws, n, order: [ws, *render(ws, *view_options(n, order))]), [state, *sel],
                           [state, *views_out], api_name=False)
        concept_gallery.select(on_image, [state, *sel], [state, *views_out], api_name="select_image")
        disagreements.select(on_subset, [state, *sel], [state, *views_out], api_name="open_subset")
        preview_btn.click(on_preview, [state, action, factor], preview_md, api_name="preview")
        apply_btn.click(on_apply, [state, action, factor, *sel], [state, preview_md, *views_out], api_name="apply")
        alpha_btn.click(on_alpha, [state, alpha, *sel], [state, preview_md, *views_out], api_name="blend")
        undo_btn.click(functools.partial(on_history, "undo"), [state, jump_step, *sel], [state, preview_md, *views_out],
                       api_name="undo")
        redo_btn.click(functools.partial(on_history, "redo"), [state, jump_step, *sel], [state, preview_md, *views_out],
                       api_name="redo")
        jump_btn.click(functools.partial(on_history, "jump"), [state, jump_step, *sel], [state, preview_md, *views_out],
                       api_name="jump")
        export_btn.click(on_export, state, log_file, api_name="export_log")
        import_btn.click(on_import, [state, log_file, *sel], [state, preview_md, *views_out], api_name="import_log")
        save_btn.click(on_save, [state, save_dir], share_md, api_name="save")
        zip_btn.click(on_zip, state, zip_file, api_name="download")
        push_btn.click(on_push, [state, repo, private], share_md, api_name="push")
        demo.load(lambda: render(None), None, views_out, api_name=False)
    return demo


def push_token(oauth_token: gr.OAuthToken | None) -> str | None:
    """The token a push uses: the signed-in user's on a Space ("Sign in with Hugging Face"), else ``HF_TOKEN``."""
    if oauth_token is not None and oauth_token.token:
        return oauth_token.token
    return os.environ.get("HF_TOKEN") or None


def launch_kwargs() -> dict:
    """Arguments for ``demo.launch``: the theme and CSS (Gradio 6 takes them there), and the host a Space needs."""
    kwargs = {"theme": gr.themes.Soft(), "css": CSS}
    if os.environ.get("SPACE_ID"):
        kwargs["server_name"] = "0.0.0.0"
    return kwargs


__all__ = ["CIFAR10", "LoadSettings", "build_app", "launch_kwargs", "push_token", "shapes_preset"]
