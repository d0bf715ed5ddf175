"""The page: setup, the coordinated views and Share, as named components, and :data:`GROUPS`, the components
that change together (each group is one view of :mod:`.views`). Layout only: what each event changes is
in :mod:`.events`. Every component an event can return has a label: the API names its outputs by them."""

from __future__ import annotations

import os
from types import SimpleNamespace

import gradio as gr

from ..distill import DistillConfig
from ..tuning import Action
from .derived import SORTS, TOP_CONCEPTS
from .settings import CORPUS_CHOICES, LoadSettings
from .workspace import MAX_NEC

ACTIONS = {action.label: action.value for action in Action}
CSS = """
.view {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px;}
.view h3 {margin-top: 0}
"""

#: The components that change together, refreshed as one by their view (:data:`.views.VIEWS`).
GROUPS = {
    "config": ("config_md", "class_table", "samples_gallery"),
    "sweep": ("nec_curve", "pick_nec"),
    "perf": ("perf_md", "class_bars", "disagreements", "group_by", "groups_table"),
    "audit": ("audit_md", "audit_table"),
    "audit_images": ("audit_images_md", "audit_gallery"),
    "subset": ("subset_images",),
    "heat": ("heat",),
    "images": ("images_md", "concept_gallery"),
    "detail": ("detail_image", "detail_md", "detail_table"),
    "tuning": ("selection_md", "proxies", "edits"),
    "provenance": ("log_plot", "log_table"),
    "controls": ("distill_btn", "alpha_btn", "jump_btn", "export_btn", "import_btn", "save_btn", "zip_btn",
                 "push_btn", "concept_btn"),
    "edit_controls": ("preview_btn", "apply_btn"),
    "steps": ("undo_btn", "redo_btn"),
}


def on_space() -> bool:
    """True when the app runs as a Hugging Face Space (then visitors save only under their own folder)."""
    return bool(os.environ.get("SPACE_ID"))


def _setup(c: SimpleNamespace, presets: dict[str, LoadSettings | None], default: LoadSettings | None) -> None:
    d = default or LoadSettings("", "", "")
    with gr.Column(scale=2, elem_id="view-setup", elem_classes="view"):
        gr.Markdown("### Setup")
        c.status_md = gr.Markdown(visible=False, elem_id="build-status", label="Shapes world build")
        c.restore_md = gr.Markdown(visible=False, elem_id="restore-prompt", label="Restore")
        with gr.Row(visible=False) as c.restore_row:
            c.restore_btn = gr.Button("Restore my session", variant="primary")
            c.discard_btn = gr.Button("Start afresh")
        c.preset = gr.Dropdown(list(presets), value=next(iter(presets)), label="Preset")
        c.teacher = gr.Textbox(d.teacher, label="Teacher (repo id or path)")
        c.dataset = gr.Textbox(d.dataset, label="Dataset (repo id or path)")
        with gr.Row():
            c.config_name = gr.Textbox(d.config_name or "", label="Config")
            c.split = gr.Textbox(d.split or "", label="Split")
        with gr.Row():
            c.image_column = gr.Textbox(d.image_column, label="Image column")
            c.label_column = gr.Textbox(d.label_column, label="Label column")
            c.group_column = gr.Textbox(d.group_column, label="Groups: class x (a column, or concept:<name>)",
                                        placeholder="e.g. background (optional)")
        c.encoder = gr.Textbox(d.encoder, label="Dual encoder (CLIP-style)")
        c.corpus = gr.Radio(list(CORPUS_CHOICES), value=d.corpus, label="Concepts")
        c.concepts_text = gr.Textbox(d.concepts_text, label="Your concepts (comma-separated)", lines=2)
        c.corpus_file = gr.File(label="…or a concept file (one per line)", file_types=[".txt"], type="filepath")
        with gr.Row():
            c.samples = gr.Number(d.samples, label="Sample size", precision=0, minimum=20)
            c.nec = gr.Slider(1, MAX_NEC, value=DistillConfig().nec, step=1, label="NEC (concepts per class)")
        with gr.Row():
            c.load_btn = gr.Button("Load", variant="primary", interactive=default is not None)
            c.distill_btn = gr.Button("Distil", variant="primary", interactive=False)
    with gr.Column(scale=3, elem_id="view-configuration", elem_classes="view"):
        gr.Markdown("### 1 · Configuration")
        c.config_md = gr.Markdown(label="Configuration")
        c.class_table = gr.Dataframe(label="Classes", interactive=False, max_height=260)
        c.samples_gallery = gr.Gallery(label="Samples", columns=6, height=220, allow_preview=False)


def _performance_and_heatmap(c: SimpleNamespace) -> None:
    with gr.Column(scale=1, elem_id="view-performance", elem_classes="view"):
        gr.Markdown("### 2 · Student performance")
        c.perf_md = gr.Markdown(label="Student performance")
        # No `height=` on native plots: in Gradio 6.31 it turns their axes ordinal (measured).
        c.class_bars = gr.BarPlot(x="bar", y="score", color="model", label="Per class (accuracy, or agreement)",
                                  y_lim=[0, 1], x_title="class", x_label_angle=-40,
                                  color_map={"teacher": "#94a3b8", "student": "#f97316"})
        c.nec_curve = gr.LinePlot(x="NEC", y="fidelity", label="Fidelity vs NEC: pick a student")
        # Custom values pass, so that a pick before Distil gets the app's own message, not Gradio's.
        c.pick_nec = gr.Dropdown([], label="Student (NEC target)", interactive=True, allow_custom_value=True)
        with gr.Row():
            c.group_by = gr.Dropdown([], label="Worst-group accuracy on groups of class x", interactive=True,
                                     allow_custom_value=False, elem_id="group-by")
        c.groups_table = gr.Dataframe(label="Per group: teacher, student before and after the last action",
                                      interactive=False, max_height=220, elem_id="groups-table")
        c.disagreements = gr.Dataframe(label="Where student and teacher disagree (click a row to open it)",
                                       interactive=False, max_height=200, elem_id="disagreements")
        c.subset_images = gr.Gallery(label="Disagreement subset", columns=8, height=160, allow_preview=True,
                                     elem_id="subset-gallery")
    with gr.Column(scale=1, elem_id="view-heatmap", elem_classes="view"):
        gr.Markdown("### 3 · Concept-class influence")
        with gr.Row():
            c.top_n = gr.Slider(5, 60, value=TOP_CONCEPTS, step=1, label="Top concepts")
            c.sort = gr.Radio(list(SORTS), value=SORTS[0], label="Sort by")
        c.heat = gr.Dataframe(label="Influence = weight x mean presence on the class's images (click a cell)",
                              interactive=False, max_height=560, elem_id="heatmap")
        with gr.Row():
            c.new_concept = gr.Textbox(label="Add a concept (scored from the kept regions, no image pass)",
                                       placeholder="e.g. striped", elem_id="new-concept", scale=3)
            c.concept_btn = gr.Button("Add", interactive=False, scale=1)


def _images_and_tuning(c: SimpleNamespace) -> None:
    with gr.Column(scale=1, elem_id="view-images", elem_classes="view"):
        gr.Markdown("### 4 · Images")
        c.images_md = gr.Markdown(label="The selected concept's images")
        c.concept_gallery = gr.Gallery(label="Where the concept is most present", columns=6, height=250,
                                       allow_preview=False, elem_id="concept-gallery")
        with gr.Row():
            c.detail_image = gr.Image(label="Image", height=220, interactive=False)
            with gr.Column():
                c.detail_md = gr.Markdown(label="Why the student and the teacher say what they say")
                c.detail_table = gr.Dataframe(label="Top contributing concepts", interactive=False)
    with gr.Column(scale=1, elem_id="view-tuning", elem_classes="view"):
        gr.Markdown("### 5 · Tuning")
        c.selection_md = gr.Markdown(label="Selection")
        c.action = gr.Radio(list(ACTIONS), value=Action.DOWN.label, label="Edit")
        c.factor = gr.Slider(1.1, 10, value=2, step=0.1, label="Factor (up / down)")
        with gr.Row():
            c.preview_btn = gr.Button("What if?", interactive=False)
            c.apply_btn = gr.Button("Apply (refit)", variant="primary", interactive=False)
        c.proxies = gr.CheckboxGroup([], label="A remove holds these proxies at 0 with the concept: they track it "
                                               "within classes (tick one to release it)", elem_id="proxies")
        c.with_labels = gr.Checkbox(False, label="Fix with labels: blend them in (alpha below) in the remove's "
                                                 "own refit")
        c.preview_md = gr.Markdown(label="What the edit does")
        with gr.Row():
            c.alpha = gr.Slider(0, 1, value=0, step=0.05, label="Blend labels into the target (alpha)")
            c.alpha_btn = gr.Button("Refit with this blend", interactive=False)
        c.edits = gr.Dataframe(label="Constraints in force", interactive=False, max_height=180)


def _shortcuts(c: SimpleNamespace) -> None:
    with gr.Column(elem_id="view-shortcuts", elem_classes="view"):
        gr.Markdown("### Shortcuts: what the teacher relies on beyond the label")
        c.audit_md = gr.Markdown(label="How the audit ranks")
        with gr.Row(equal_height=False):
            c.audit_table = gr.Dataframe(label="Findings, best first (click a row to select it for tuning)",
                                         interactive=False, max_height=320, elem_id="audit-table", scale=3)
            with gr.Column(scale=2):
                c.audit_images_md = gr.Markdown(label="The group it hurts")
                c.audit_gallery = gr.Gallery(label="The group it hurts, with where the concept is (heat)", columns=4,
                                             height=280, allow_preview=True, elem_id="audit-gallery")


def _provenance_and_share(c: SimpleNamespace) -> None:
    with gr.Column(scale=3, elem_id="view-provenance", elem_classes="view"):
        gr.Markdown("### 6 · Provenance")
        c.log_plot = gr.LinePlot(x="step", y="value", color="metric", label="Metrics after each step",
                                 x_title="step")
        c.log_table = gr.Dataframe(label="The tuning log", interactive=False, max_height=260, elem_id="provenance-log")
        with gr.Row():
            c.undo_btn = gr.Button("Undo", interactive=False)
            c.redo_btn = gr.Button("Redo", interactive=False)
            c.jump_step = gr.Number(0, label="Step", precision=0, minimum=0)
            c.jump_btn = gr.Button("Jump to step", interactive=False)
        with gr.Row():
            c.export_btn = gr.Button("Export log", interactive=False)
            c.log_file = gr.File(label="Log (JSON): download, or drop one to import", file_types=[".json", ".jsonl"],
                                 type="filepath")
            c.import_btn = gr.Button("Import log", interactive=False)
    with gr.Column(scale=2, elem_id="view-share", elem_classes="view"):
        gr.Markdown("### Share")
        # On a Space, visitors save under their own session folder only (and take the zip).
        c.save_dir = gr.Textbox("infincond-student", label="Save to folder", elem_id="save-dir", visible=not on_space())
        c.save_btn = gr.Button("Save on the server" if on_space() else "Save locally", interactive=False)
        c.zip_btn = gr.Button("Download as zip", interactive=False)
        c.zip_file = gr.File(label="Student (zip)", elem_id="student-zip")
        c.repo = gr.Textbox(label="Hub repo (user/name)", elem_id="push-repo")
        c.private = gr.Checkbox(False, label="Private")
        if on_space():
            gr.LoginButton()
        c.push_btn = gr.Button("Push to the Hub", interactive=False)
        c.share_md = gr.Markdown(label="Shared")


def layout(presets: dict[str, LoadSettings | None], secret: str | None = None) -> SimpleNamespace:
    """Create every component (inside an open ``gr.Blocks``); returns them by name. A preset whose settings
    are None is still being prepared (the Shapes world building): Load waits for it. ``secret`` encrypts
    the session id kept in the browser (the same secret after a restart lets the browser find it again)."""
    c = SimpleNamespace()
    default = next(iter(presets.values()))
    c.state = gr.State(None)
    c.browser = gr.BrowserState(None, storage_key="infincond-session", secret=secret)
    gr.Markdown(
        "# InFiConD · interactive no-code fine-tuning with concept-based distillation\n"
        "Distil an image classifier into a sparse linear model over text concepts, inspect it, tune it, share it."
    )
    with gr.Row(equal_height=False):
        _setup(c, presets, default)
    with gr.Row(equal_height=False):
        _performance_and_heatmap(c)
    with gr.Row(equal_height=False):
        _shortcuts(c)
    with gr.Row(equal_height=False):
        _images_and_tuning(c)
    with gr.Row(equal_height=False):
        _provenance_and_share(c)
    # The API's ways in where the page clicks: a (concept, class) by name, a finding by its row, a session by id.
    c.hidden_concept, c.hidden_class = gr.Textbox(visible=False, label="Concept"), gr.Textbox(visible=False,
                                                                                                 label="Class")
    c.hidden_btn = gr.Button(visible=False)
    c.finding_index, c.finding_btn = gr.Number(0, precision=0, visible=False, label="Finding"), gr.Button(visible=False)
    c.image_index, c.image_btn = gr.Number(0, precision=0, visible=False, label="Image"), gr.Button(visible=False)
    c.subset_index, c.subset_btn = gr.Number(0, precision=0, visible=False, label="Subset"), gr.Button(visible=False)
    c.session_id = gr.Textbox(visible=False, label="Session id")
    c.session_btn, c.restore_api_btn = gr.Button(visible=False), gr.Button(visible=False)
    c.timer = gr.Timer(1.0, active=False)
    return c


def group(c: SimpleNamespace, *names: str) -> list:
    """The components of these groups, in order."""
    return [getattr(c, name) for g in names for name in GROUPS[g]]
