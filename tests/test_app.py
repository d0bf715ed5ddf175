"""The Gradio app over real HTTP: the whole workflow through gradio_client (load, distil, select, edit,
undo, export), checked against the core; two clients at once never see each other's state."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from infincond import (
    ConceptEncoder,
    ConceptStudent,
    DataConfig,
    DistillConfig,
    ImageSource,
    Teacher,
    distill,
    extract_features,
)
from infincond.analysis import class_presence
from infincond.analysis import influence as concept_influence
from infincond.tuning import TuningSession
from infincond.ui import LoadSettings, build_app, launch_kwargs, outputs_of
from infincond.ui.events import EVENTS

from .conftest import _free_port

NEC = 3


@contextmanager
def running_app(preset: LoadSettings, cache_dir):
    """The app with ``preset``, served on a free loopback port; yields its URL."""
    demo = build_app({"Shapes world (offline)": preset}, cache_dir=cache_dir)
    port = _free_port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def app_url(preset, tmp_path_factory):
    with running_app(preset, tmp_path_factory.mktemp("app-cache")) as url:
        yield url


@pytest.fixture(scope="module")
def core(preset, tmp_path_factory):
    """The same features and student computed by the core directly, to check the app against."""
    source = ImageSource.load(DataConfig(preset.dataset, split=preset.split, samples=preset.samples))
    teacher = Teacher.from_pretrained(preset.teacher, dataset_label_names=source.label_names)
    features = extract_features(source, teacher, ConceptEncoder.from_pretrained(preset.encoder),
                                preset.corpus_value(), cache_dir=False, progress=False)
    return features, distill(features, DistillConfig(nec=NEC))


def call(client: Client, api: str, *args) -> dict:
    """An event through the HTTP API; its outputs by component name (those it did not change are updates)."""
    result = client.predict(*args, api_name=f"/{api}")
    return dict(zip(outputs_of(api), result if isinstance(result, tuple) else (result,), strict=True))


def load_and_distil(client: Client, preset: LoadSettings, nec: int = NEC) -> dict:
    call(client, "load", preset.teacher, preset.dataset, preset.config_name or "", preset.split or "",
         preset.image_column, preset.label_column, preset.encoder, preset.corpus, preset.concepts_text, preset.samples,
         preset.group_column, None)
    return call(client, "distill", nec)


def rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row, strict=True)) for row in table["data"]]


def test_whole_workflow_through_gradio_client_matches_the_core(app_url, preset, core, tmp_path):
    features, student = core
    client = Client(app_url, verbose=False)
    out = load_and_distil(client, preset)
    session = TuningSession(features, student)
    assert f"**Fidelity** {100 * session.metrics['fidelity']:.1f}%" in out["perf_md"]
    heat = rows(out["heat"])
    assert heat and set(heat[0]) == {"concept", *features.class_names}
    # The per-class bars: teacher and student accuracy on the validation images, the core's.
    bars, full = out["class_bars"], session.evaluate()
    assert bars["mark"] == "bar" and bars["datatypes"]["score"] == "quantitative"
    scores = {(row[1], row[2]): row[3] for row in bars["data"]}
    for c, name in enumerate(features.class_names):
        assert scores[(name, "student")] == pytest.approx(full.class_accuracy[c])
        assert scores[(name, "teacher")] == pytest.approx(full.teacher_class_accuracy[c])
    assert [row[0] for row in out["nec_curve"]["data"]] == sorted(row[0] for row in out["nec_curve"]["data"])
    # Select a weight the student uses and down-tune it: the app's metrics are the core's.
    c, k = np.argwhere(student.weight != 0)[0]
    concept, cls = features.concepts[k], features.class_names[c]
    out = call(client, "select", concept, cls)
    assert f"**{concept}** for class **{cls}**" in out["selection_md"]
    # The heatmap: the selected cell alone outlined, every value shown to 3 decimals on its sign's colour.
    heat, influence = out["heat"], concept_influence(student.weight, class_presence(features, student))
    styles, shown = heat["metadata"]["styling"], heat["metadata"]["display_value"]
    outlined = [(row[0], heat["headers"][j]) for row, style in zip(heat["data"], styles, strict=True)
                for j, cell in enumerate(style) if "outline" in cell]
    assert outlined == [(concept, cls)]
    for row, style, text in zip(heat["data"], styles, shown, strict=True):
        k_row = features.concepts.index(row[0])
        for j, name in enumerate(heat["headers"][1:], start=1):
            value = influence[features.class_names.index(name), k_row]
            assert row[j] == pytest.approx(round(value, 3), abs=1e-9) and text[j] == f"{row[j]:.3f}"
            assert ("37, 99, 235" in style[j]) == (row[j] > 0) and ("220, 38, 38" in style[j]) == (row[j] < 0)
    preview = client.predict("Down-tune", 2.0, api_name="/preview")
    assert f"What if: down-tune '{concept}' for {cls} x2" in preview and "refitting..." in preview
    refitted = client.predict("Down-tune", 2.0, api_name="/preview_refit")  # what the page chains after it
    out = call(client, "apply", "Down-tune", 2.0)
    entry = session.down(concept, cls, 2.0)
    assert "what Apply gives" in refitted
    assert f"fidelity {100 * entry.metrics_before['fidelity']:.1f}% -> {100 * entry.metrics_after['fidelity']:.1f}%" \
        in refitted
    log = rows(out["log_table"])
    assert [r["action"] for r in log] == ["distilled student", f"down-tune '{concept}' for {cls} x2"]
    points = {(step, metric): value for step, metric, value in out["log_plot"]["value"]["data"]}
    assert points[("1", "fidelity")] == pytest.approx(entry.metrics_after["fidelity"])
    assert points[("0", "accuracy")] == pytest.approx(entry.metrics_before["accuracy"])
    assert log[-1]["fidelity"] == f"{100 * entry.metrics_after['fidelity']:.1f}%"
    assert log[-1]["accuracy"] == f"{100 * entry.metrics_after['accuracy']:.1f}%"
    assert f"weight {entry.changes[0]['after']:+.3f}" in out["selection_md"]
    # Undo, then export the log: it replays on the core's features to the undone (= distilled) student.
    undone = call(client, "undo")
    assert (rows(undone["log_table"])[-1]["action"].startswith("undo")
            and rows(undone["log_table"])[-1]["current"] == "●")
    path = client.predict(api_name="/export_log")
    log_json = json.loads(open(path).read())
    assert [e["action"] for e in log_json["entries"]] == ["start", "edit", "undo"]
    replayed = TuningSession.replay(features, log_json)
    np.testing.assert_allclose(replayed.weight, student.weight, atol=1e-6)
    zipped = client.predict(api_name="/download")
    assert zipped.endswith(".zip")
    # Another session imports that log: it replays to the same history.
    other = Client(app_url, verbose=False)
    load_and_distil(other, preset)
    out = call(other, "import_log", handle_file(path))
    assert out["preview_md"] == "Imported and replayed 3 steps (largest weight gap 0)."
    assert [r["action"] for r in rows(out["log_table"])] == [r["action"] for r in rows(undone["log_table"])]


def test_errors_are_clear_messages_and_two_clients_are_isolated(app_url, preset):
    first, second = Client(app_url, verbose=False), Client(app_url, verbose=False)
    with pytest.raises(AppError, match="Load a teacher and a dataset first"):
        second.predict("Down-tune", 2.0, api_name="/preview")
    load_and_distil(first, preset)
    first.predict("Remove", 2.0, api_name="/apply")
    # The second client still has nothing: the first one's student is not shared.
    with pytest.raises(AppError, match="Load a teacher and a dataset first"):
        second.predict(api_name="/undo")
    out = load_and_distil(second, preset, nec=1)
    assert [r["action"] for r in rows(out["log_table"])] == ["distilled student"]
    assert "NEC 1.0" in out["perf_md"]
    # ...and the first client's history is untouched by the second's distillation.
    out = call(first, "undo")
    assert [r["action"].split(" ")[0] for r in rows(out["log_table"])] == ["distilled", "remove", "undo"]
    assert f"NEC {NEC}.0" in out["perf_md"]
    with pytest.raises(AppError, match="Unknown concept 'nope'"):
        first.predict("nope", "circle", api_name="/select")


def test_push_from_the_app_reaches_the_hub_and_loads_back(app_url, preset, core, hub, monkeypatch, tmp_path):
    features, student = core
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write_token")  # what the app reads when run locally
    client = Client(app_url, verbose=False)
    load_and_distil(client, preset)
    message = client.predict("alice/app-student", True, api_name="/push")
    url = f"{hub.url}/alice/app-student"
    assert message == f"Pushed: [{url}]({url})"
    with pytest.raises(RepositoryNotFoundError):  # pushed private: invisible without the token
        HfApi(token=False).model_info("alice/app-student")
    loaded = ConceptStudent.from_pretrained("alice/app-student", token="hf_alice_write_token", cache_dir=tmp_path)
    np.testing.assert_allclose(loaded.linear.weight, student.weight)
    local = ConceptStudent.from_session(TuningSession(features, student))
    images = ImageSource.load(DataConfig(preset.dataset, split="test", samples=16)).images(range(16))
    np.testing.assert_array_equal(loaded.predict(images).class_ids, local.predict(images).class_ids)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(AppError, match="No Hugging Face token"):
        client.predict("alice/app-student", False, api_name="/push")


def test_restore_after_up_tune_then_export_save_zip_and_push(app_url, preset, hub, monkeypatch, tmp_path):
    # The data-loss bug through the app: after a restore, export, save, zip and push all failed.
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write_token")
    client = Client(app_url, verbose=False)
    out = load_and_distil(client, preset)
    concept = rows(out["heat"])[0]["concept"]
    cls = next(name for name in rows(out["heat"])[0] if name != "concept")
    client.predict(concept, cls, api_name="/select")
    client.predict("Up-tune", 2.0, api_name="/apply")
    out = call(client, "apply", "Restore", 2.0)
    assert rows(out["log_table"])[-1]["action"] == f"restore '{concept}' for {cls}"
    log = json.loads(open(client.predict(api_name="/export_log")).read())
    assert log["entries"][-1]["changes"][0]["lower"] is None and log["entries"][-1]["changes"][0]["upper"] is None
    message = client.predict(str(tmp_path / "student"), api_name="/save")
    assert "Saved to" in message
    assert json.loads((tmp_path / "student" / "tuning_log.json").read_text())["entries"] == log["entries"]
    assert client.predict(api_name="/download").endswith(".zip")
    assert client.predict("alice/restored-student", False, api_name="/push").startswith("Pushed:")
    # Saving again replaces the previous student whole; a folder with other content is refused.
    client.predict(str(tmp_path / "student"), api_name="/save")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("mine")
    with pytest.raises(AppError, match="holds other files"):
        client.predict(str(tmp_path / "mine"), api_name="/save")
    assert (tmp_path / "mine" / "README.md").read_text() == "mine"


def test_the_autosaved_journal_imports_and_an_earlier_versions_log_still_restores(preset, tmp_path):
    with running_app(preset, tmp_path / "cache") as url:
        client = Client(url, verbose=False)
        out = load_and_distil(client, preset)
        concept, cls = rows(out["heat"])[0]["concept"], [n for n in rows(out["heat"])[0] if n != "concept"][0]
        call(client, "select", concept, cls)
        call(client, "apply", "Up-tune", 2.0)
        call(client, "undo")
        session_id = client.predict(api_name="/session")
        logs = tmp_path / "cache" / "sessions" / session_id / "logs"
        (journal,) = logs.iterdir()
        assert journal.suffix == ".jsonl" and len(journal.read_text().splitlines()) == 4  # header, 3 entries
        # The journal imports like an exported log (it records no final weights to compare with).
        other = Client(url, verbose=False)
        load_and_distil(other, preset)
        out = call(other, "import_log", handle_file(str(journal)))
        assert out["preview_md"] == "Imported and replayed 3 steps (a journal: no final weights to check)."
        # An autosave of the previous version (the whole export, .json) restores, then becomes a journal.
        exported = json.loads(Path(client.predict(api_name="/export_log")).read_text())
        journal.with_suffix(".json").write_text(json.dumps(exported))
        journal.unlink()
        third = Client(url, verbose=False)
        out = call(third, "restore", session_id)
        assert "Restored your session: 2 tuning action(s) replayed." in str(out["restore_md"])
        call(third, "redo")
        assert [p.suffix for p in logs.iterdir()] == [".jsonl"]
        restored = json.loads(Path(third.predict(api_name="/export_log")).read_text())
        assert [e["summary"] for e in restored["entries"]] == [e["summary"] for e in exported["entries"]] + [
            "redo (to state 1)"]


def test_switching_students_keeps_each_tuning_session(app_url, preset):
    client = Client(app_url, verbose=False)
    load_and_distil(client, preset)
    client.predict("Remove", 2.0, api_name="/apply")
    tuned = [r["action"] for r in rows(call(client, "pick_student", 5)["log_table"])]
    assert tuned == ["distilled student"]  # NEC 5 has its own, fresh session
    back = call(client, "pick_student", NEC)
    assert [r["action"].split(" ")[0] for r in rows(back["log_table"])] == ["distilled", "remove"]
    assert rows(back["log_table"])[-1]["current"] == "●"
    # Distilling again keeps the session of a student with edits.
    again = call(client, "distill", NEC)
    assert again["log_table"] == {"__type__": "update"}  # the same student, its session kept: nothing to redraw
    log = json.loads(open(client.predict(api_name="/export_log")).read())
    assert [e["action"] for e in log["entries"]] == ["start", "edit"]



def test_a_typed_concept_is_scored_shown_and_tunable_without_an_image_pass(app_url, preset, monkeypatch):
    client = Client(app_url, verbose=False)
    load_and_distil(client, preset)
    call(client, "apply", "Remove", 2.0)
    before = json.loads(open(client.predict(api_name="/export_log")).read())
    from infincond import extraction

    def no_image_pass(*args, **kwargs):
        raise AssertionError("adding a concept must not read images")

    monkeypatch.setattr(extraction, "run_extraction", no_image_pass)
    out = call(client, "add_concept", "zebra stripes")
    assert out["new_concept"] == ""
    assert "Where **zebra stripes** is most present" in out["images_md"]
    assert "zebra stripes" in [row["concept"] for row in rows(out["heat"])]
    assert "Selected: **zebra stripes**" in out["selection_md"]
    after = json.loads(open(client.predict(api_name="/export_log")).read())
    assert [e["summary"] for e in after["entries"]] == [e["summary"] for e in before["entries"]]
    np.testing.assert_allclose(np.asarray(after["final"]["weight"])[:, :-1], before["final"]["weight"], atol=1e-9)
    out = call(client, "apply", "Up-tune", 2.0)  # a concept no class used: now it is used
    assert rows(out["log_table"])[-1]["action"].startswith("up-tune 'zebra stripes' for")


def test_the_shortcut_view_opens_a_finding_for_tuning_and_the_groups_can_change(app_url, preset, core):
    features, student = core
    client = Client(app_url, verbose=False)
    out = load_and_distil(client, preset)
    groups = rows(out["groups_table"])
    assert groups and all(" · " in g["group"] for g in groups)  # class x background, worst first
    assert "**Worst group** (class x background)" in out["perf_md"]
    findings = rows(out["audit_table"])
    assert findings and {"class", "concept", "score", "hurts"} <= set(findings[0])
    assert "label held" in out["audit_md"] and out["audit_gallery"]  # the hurt group's images, heat-mapped
    # Open the first finding: its concept and class are selected, with Remove as the edit.
    opened = call(client, "finding", 0)
    first = findings[0]
    assert opened["action"] == "Remove"
    assert f"**{first['concept']}** for class **{first['class']}**" in opened["selection_md"]
    session = TuningSession(features, student)
    proxies = [name for name, _ in session.proxies(first["concept"])]
    assert opened["proxies"]["value"] == [] and opened["proxies"]["choices"] == [[p, p] for p in proxies]
    preview = client.predict("Remove", 2.0, api_name="/preview_refit")
    assert f"remove '{first['concept']}' for {first['class']}" in preview
    assert ("holds" in preview) == bool(proxies)
    # A group column the dataset lacks is refused (the picker lists what can group); a concept's presence can.
    with pytest.raises(AppError, match="lake is not in the list of choices: \\['colour', 'pattern', 'size', "
                                       "'background', 'rocks', 'concept:"):
        client.predict("lake", api_name="/set_groups")
    out = call(client, "set_groups", f"concept:{first['concept']}")
    assert all(f"'{first['concept']}' p" in g["group"] or f"'{first['concept']}' a" in g["group"]
               for g in rows(out["groups_table"]))
    assert out["group_by"]["value"] == f"concept:{first['concept']}"


def test_every_endpoint_names_its_parameters_and_labels_its_outputs(app_url):
    import re

    endpoints = Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert len(endpoints) >= 25
    for name, endpoint in endpoints.items():
        parameters = [p["parameter_name"] for p in endpoint["parameters"]]
        labels = [r["label"] for r in endpoint["returns"]]
        assert not [p for p in parameters if re.fullmatch(r"param_\d+", p or "")], (name, parameters)
        assert labels and not [v for v in labels if not v or re.fullmatch(r"value_\d+", v)], (name, labels)
        if name.lstrip("/") in EVENTS:  # what the tests read an event's outputs by is what the API returns
            assert len(outputs_of(name.lstrip("/"))) == len(labels), name
    assert [p["parameter_name"] for p in endpoints["/apply"]["parameters"]] == ["action", "factor", "release",
                                                                                 "with_labels", "alpha"]


def test_long_jobs_share_one_lane_and_the_app_runs_numpy_blas_on_one_thread(preset, tmp_path):
    """Load, distil, import, save, download and push run in the "heavy" lane (one at a time on a small
    machine); numpy's OpenBLAS threads, which spin after every product, are held to one (see one_blas_thread).
    The lane at work: tests/test_sessions.py."""
    from threadpoolctl import threadpool_info

    from infincond.ui.events import heavy_limit

    assert heavy_limit(2) == heavy_limit(4) == 1 and heavy_limit(16) == 4
    demo = build_app({"Shapes world (offline)": preset}, cache_dir=tmp_path)
    lanes = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values() if fn.api_name}
    heavy = {name for name, event in EVENTS.items() if event.heavy}
    assert heavy == {"load", "restore", "distill", "import_log", "save", "download", "push"}
    assert {lanes[name] for name in heavy} == {("heavy", heavy_limit())}
    assert all(lanes[name][0] != "heavy" for name in ("select", "preview", "undo", "redo", "apply", "session"))
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"]
    assert blas and set(blas) == {1}  # numpy's (and scipy's, when loaded)
