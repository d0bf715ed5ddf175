"""Bad inputs a user can give, across the three layers (library, CLI, app): each is refused with one of the
project's exceptions and a message that says what is wrong, the CLI prints it on one line and exits 2, and
the app shows it and keeps the session exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from infincond import (
    ConceptCorpus,
    ConceptEncoder,
    ConceptStudent,
    DataConfig,
    DistillConfig,
    ExtractConfig,
    ImageSource,
    Teacher,
    distill,
)
from infincond.cli import main
from infincond.errors import ConfigError, LoadError, StorageError
from infincond.testing import planted_features
from infincond.tuning import TuningSession
from infincond.tuning.log import LOG_VERSION

FEATURES = planted_features(n=200, k=8, c=3, nec=2, seed=3)
STUDENT = distill(FEATURES, DistillConfig(nec=2, max_iter=100))


@pytest.fixture(scope="module")
def bad(repos, features, encoder, tmp_path_factory):
    """Files a careless user might hand over: a truncated teacher and student, a corrupt image, tuning
    logs that are broken in many ways, folders that must not be written into."""
    root = tmp_path_factory.mktemp("bad")
    truncated = Path(shutil.copytree(repos["teacher"], root / "truncated-teacher"))
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    student = ConceptStudent.from_linear(distill(features, DistillConfig(nec=2)), features, encoder)
    student.save_pretrained(root / "student")
    broken_student = Path(shutil.copytree(root / "student", root / "truncated-student"))
    (broken_student / "model.safetensors").write_bytes((broken_student / "model.safetensors").read_bytes()[:100])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    project = root / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    (project / "config.json").write_text('{"mine": true}')
    (root / "a-file").write_text("x")
    session = TuningSession(FEATURES, STUDENT)
    session.down(session.concepts[int(np.nonzero(STUDENT.weight[0])[0][0])], session.class_names[0], 2)
    return {"root": root, "truncated_teacher": str(truncated), "student": student, "student_dir": root / "student",
            "truncated_student": str(broken_student), "project": project, "log": session.export_log()}


def broken_log(log: dict, change) -> dict:
    """A deep copy of ``log`` with ``change(copy)`` applied."""
    copy = json.loads(json.dumps(log))
    change(copy)
    return copy


def unwritable(root: Path) -> Path:
    """A folder this process cannot write into: read-only for an ordinary user; for root (which ignores
    permissions) the kernel's sysfs, which refuses new files."""
    if os.geteuid() == 0:
        return Path("/sys/infincond-student")
    folder = root / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder / "student"


# -- the library: (what the user does, the error type, a fragment of its message) ---------------------------
def replay(change):
    """Replaying the fixture's log with ``change(copy)`` applied."""
    return lambda repos, bad: TuningSession.replay(FEATURES, broken_log(bad["log"], change))


def replay_text(text):
    """Replaying a log file holding ``text`` (or ``text(log)``, from the fixture's log)."""
    def action(repos, bad):
        content = text(bad["log"]) if callable(text) else text
        path = bad["root"] / f"log-{abs(hash(content)) % 10**8}.json"
        path.write_text(content)
        return TuningSession.replay(FEATURES, path)
    return action


def set_weight(value):
    def change(data):
        data["initial"]["weight"][0][0] = value
    return change


LIBRARY_CASES = [
    (
        "teacher path that does not exist",
        lambda repos, bad: Teacher.from_pretrained("./no/such/teacher"),
        LoadError,
        "teacher path './no/such/teacher' does not exist",
    ),
    (
        "a CLIP encoder given as the teacher",
        lambda repos, bad: Teacher.from_pretrained(repos["clip"]),
        LoadError,
        "not a trained image classifier",
    ),
    (
        "a teacher with truncated weights",
        lambda repos, bad: Teacher.from_pretrained(bad["truncated_teacher"]),
        LoadError,
        "damaged or incomplete",
    ),
    (
        "a classifier given as the encoder",
        lambda repos, bad: ConceptEncoder.from_pretrained(repos["teacher"]),
        LoadError,
        "not a dual image-text encoder",
    ),
    (
        "a repo id with two slashes",
        lambda repos, bad: ImageSource.load(DataConfig("owner/name/extra")),
        LoadError,
        "does not exist",
    ),
    (
        "a repo id with spaces",
        lambda repos, bad: Teacher.from_pretrained("my teacher"),
        LoadError,
        "neither an existing local path nor a valid Hub repo id",
    ),
    ("an empty teacher", lambda repos, bad: Teacher.from_pretrained(""), LoadError, "No teacher given"),
    (
        "one sample",
        lambda repos, bad: DataConfig(repos["dataset"], samples=1),
        ConfigError,
        "samples must be at least 2",
    ),
    (
        "a fractional sample size",
        lambda repos, bad: DataConfig(repos["dataset"], samples=10.5),
        ConfigError,
        "samples must be a whole number",
    ),
    (
        "val_fraction NaN",
        lambda repos, bad: DataConfig(repos["dataset"], val_fraction=float("nan")),
        ConfigError,
        "val_fraction must be a finite number",
    ),
    (
        "temperature NaN",
        lambda repos, bad: DistillConfig(temperature=float("nan")),
        ConfigError,
        "temperature must be a finite number",
    ),
    (
        "temperature 0",
        lambda repos, bad: DistillConfig(temperature=0),
        ConfigError,
        "temperature must be a number in (0",
    ),
    ("l1 infinite", lambda repos, bad: DistillConfig(l1=float("inf")), ConfigError, "l1 must be a finite number"),
    ("label weight below 0", lambda repos, bad: DistillConfig(label_weight=-0.1), ConfigError, "label_weight (alpha)"),
    (
        "a fractional NEC",
        lambda repos, bad: DistillConfig(nec=2.5),
        ConfigError,
        "nec (effective concepts per class) must",
    ),
    ("an unknown method", lambda repos, bad: DistillConfig(method="svm"), ConfigError, "method must be one of"),
    (
        "a template with two placeholders",
        lambda repos, bad: ExtractConfig(template="{} and {}"),
        ConfigError,
        "exactly one '{}'",
    ),
    (
        "a template without a placeholder",
        lambda repos, bad: ExtractConfig(template="a photo"),
        ConfigError,
        "exactly one '{}'",
    ),
    ("a malformed template", lambda repos, bad: ExtractConfig(template="a {photo"), ConfigError, "malformed"),
    ("batch size 0", lambda repos, bad: ExtractConfig(batch_size=0), ConfigError, "batch_size must be at least 1"),
    ("an unknown region mode", lambda repos, bad: ExtractConfig(region_mode="pixels"), ConfigError, "region_mode"),
    (
        "a concept file that is binary",
        lambda repos, bad: ConceptCorpus.from_file(bad["root"] / "binary.txt"),
        ConfigError,
        "cannot be read as UTF-8 text",
    ),
    (
        "a student with truncated weights",
        lambda repos, bad: ConceptStudent.from_pretrained(bad["truncated_student"]),
        LoadError,
        "damaged or incomplete",
    ),
    (
        "a student path that does not exist",
        lambda repos, bad: ConceptStudent.from_pretrained("./no/student"),
        LoadError,
        "does not exist",
    ),
    (
        "a corrupt image to predict",
        lambda repos, bad: bad["student"].predict(bad["root"] / "corrupt.jpg"),
        LoadError,
        "cannot be read as an image",
    ),
    (
        "saving into a project folder",
        lambda repos, bad: bad["student"].save_pretrained(bad["project"]),
        StorageError,
        "holds other files (README.md, config.json)",
    ),
    (
        "saving where a file is",
        lambda repos, bad: bad["student"].save_pretrained(bad["root"] / "a-file"),
        StorageError,
        "it is a file, not a folder",
    ),
    (
        "saving under a file",
        lambda repos, bad: bad["student"].save_pretrained(bad["root"] / "a-file" / "student"),
        StorageError,
        "is a file, not a folder",
    ),
    (
        "saving where nothing may be written",
        lambda repos, bad: bad["student"].save_pretrained(unwritable(bad["root"])),
        StorageError,
        "read-only, or you may not write there",
    ),
    (
        "pushing to a repo id with two slashes",
        lambda repos, bad: bad["student"].push_to_hub("a/b/c"),
        ConfigError,
        "not a valid Hub repo id: it has more than one '/'",
    ),
    (
        "pushing to a repo id with a space",
        lambda repos, bad: bad["student"].push_to_hub("me/my student"),
        ConfigError,
        "not a valid Hub repo id",
    ),
    ("a log that is not JSON", replay_text("{not json"), ConfigError, "Cannot read the tuning log"),
    (
        "a log with NaN weights",
        replay_text(lambda log: json.dumps(log).replace(f'"version": {LOG_VERSION}', '"version": NaN', 1)),
        ConfigError,
        "NaN, which is not a number",
    ),
    ("a log nested absurdly deep", replay_text("[" * 100_000 + "]" * 100_000), ConfigError, "nested too deeply"),
    ("a log of another program", replay(lambda d: d.update(format="other")), ConfigError, "not an InFiConD tuning log"),
    ("a log from a future version", replay(lambda d: d.update(version=99)), ConfigError, "version 99 is not supported"),
    ("a log without its initial student", replay(lambda d: d.pop("initial")), ConfigError, "initial is missing"),
    (
        "a log with a NaN weight given as a dict",
        replay(set_weight(float("nan"))),
        ConfigError,
        "initial.weight holds a value that is not a finite number",
    ),
    ("a log with a text weight", replay(set_weight("big")), ConfigError, "initial.weight must be an array"),
    (
        "a log with weights of another shape",
        replay(lambda d: d["initial"]["weight"].pop()),
        ConfigError,
        "initial.bias has shape",
    ),
    (
        "a log with an unknown action",
        replay(lambda d: d["entries"][1].update(action="explode")),
        ConfigError,
        "entries[1].action must be",
    ),
    (
        "a log with a text factor",
        replay(lambda d: d["entries"][1]["params"].update(factor="abc")),
        ConfigError,
        "entries[1].params.factor must be a finite number",
    ),
    (
        "a log with a factor of 1",
        replay(lambda d: d["entries"][1]["params"].update(factor=1)),
        ConfigError,
        "entries[1].params.factor",
    ),
    (
        "a log with a label weight of 2",
        replay(lambda d: d["entries"][0]["params"].update(label_weight=2)),
        ConfigError,
        "entries[0].params.label_weight must be a number in [0, 1], not 2",
    ),
    (
        "a log jumping to a step that never was",
        replay(lambda d: d["entries"].append({**d["entries"][1], "action": "jump", "params": {"step": 99}})),
        ConfigError,
        "entries[2].params.step must be a step number from 0 to 1",
    ),
    (
        "a log with bad distillation settings",
        replay(lambda d: d["initial"]["config"].update(temperature=-1)),
        ConfigError,
        "initial.config",
    ),
    (
        "a log editing a concept the student lacks",
        replay(lambda d: d["entries"][1]["params"].update(concept="unicorn")),
        ConfigError,
        "Step 1 of the tuning log (edit) cannot be replayed: Unknown concept 'unicorn'",
    ),
    (
        "a label weight of NaN",
        lambda repos, bad: TuningSession(FEATURES, STUDENT).set_label_weight(float("nan")),
        ConfigError,
        "label_weight (alpha) must be a finite number in [0, 1], not nan",
    ),
]


@pytest.mark.parametrize(("name", "action", "error", "fragment"), LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_the_library_refuses_bad_inputs_clearly(repos, bad, name, action, error, fragment):
    readme = (bad["project"] / "README.md").read_text()
    with pytest.raises(error) as caught:
        action(repos, bad)
    assert fragment in str(caught.value), f"{name}: {caught.value}"
    # User-fixable settings are ValueErrors too; nothing was written over the user's files.
    assert issubclass(ConfigError, ValueError) and (bad["project"] / "README.md").read_text() == readme
    assert json.loads((bad["project"] / "config.json").read_text()) == {"mine": True}


# -- the CLI: one line on stderr, exit status 2, no traceback -------------------------------------------------
def common(repos, out: str) -> list[str]:
    return ["--teacher", repos["teacher"], "--dataset", repos["dataset"], "--encoder", repos["clip"], "--out", out]


#: What the user types (given the fixtures' repos and files and an output folder), and a fragment of the message.
CLI_CASES = {
    "nan temperature": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--temperature", "nan"],
        "temperature must be a finite number",
    ),
    "nec 0": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--nec", "0"],
        "nec (effective concepts per class) must be at least 1",
    ),
    "one sample": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--samples", "1"],
        "samples must be at least 2",
    ),
    "val-fraction 1.5": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--val-fraction", "1.5"],
        "val_fraction must be a number in (0, 1)",
    ),
    "two placeholders": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--template", "{} {}"],
        "exactly one '{}'",
    ),
    "missing teacher": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--teacher", "./missing-teacher"],
        "teacher path './missing-teacher' does not exist",
    ),
    "clip as teacher": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--teacher", repos["clip"]],
        "not a trained image classifier",
    ),
    "missing corpus": (
        lambda repos, bad, out: ["distill", *common(repos, out), "--corpus", "missing-corpus.txt"],
        "does not exist",
    ),
    "out is a project": (
        lambda repos, bad, out: ["distill", *common(repos, out)[:-1], str(bad["project"])],
        "holds other files",
    ),
    "push to a/b/c": (
        lambda repos, bad, out: ["push", "--student", str(bad["student_dir"]), "--repo", "a/b/c"],
        "not a valid Hub repo id",
    ),
    "push a missing student": (
        lambda repos, bad, out: ["push", "--student", "./no/student", "--repo", "alice/x"],
        "does not exist",
    ),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_cli_prints_one_line_and_exits_2(repos, bad, tmp_path, capsys, case):
    argv, fragment = CLI_CASES[case]
    argv = argv(repos, bad, str(tmp_path / "out"))
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and fragment in lines[0], (argv, err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


# -- the app: each refused event shows the error and leaves the session as it was ----------------------------
@pytest.fixture(scope="module")
def app(preset, tmp_path_factory):
    from .test_app import running_app

    with running_app(preset, tmp_path_factory.mktemp("bad-app-cache")) as url:
        yield url


#: Events out of order, on a page where nothing was loaded yet: (endpoint, arguments, the message's start).
EARLY_EVENTS = {
    "apply before Load": ("/apply", ("Down-tune", 2.0), "Load a teacher and a dataset first"),
    "export before Load": ("/export_log", (), "Load a teacher and a dataset first"),
    "download before Load": ("/download", (), "Load a teacher and a dataset first"),
    "undo before Load": ("/undo", (), "Load a teacher and a dataset first"),
    "distil before Load": ("/distill", (3,), "Load a teacher and a dataset first"),
    "save before Load": ("/save", ("early",), "Load a teacher and a dataset first"),
    "pick a student before Load": ("/pick_student", (5,), "Load a teacher and a dataset first"),
    "a concept and class before Load": ("/select", ("water", "circle"), "Load a teacher and a dataset first"),
    "an image before Load": ("/image", (0,), "Load a teacher and a dataset first"),
    "a subset before Load": ("/subset", (0,), "Load a teacher and a dataset first"),
    "a finding before Load": ("/finding", (0,), "Load a teacher and a dataset first"),
    "groups before Load": ("/set_groups", ("background",), "not in the list of choices"),
}


@pytest.mark.parametrize("case", EARLY_EVENTS)
def test_events_out_of_order_say_what_to_do_first(app, case):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    api, args, fragment = EARLY_EVENTS[case]
    with pytest.raises(AppError) as caught:
        Client(app, verbose=False).predict(*args, api_name=api)
    assert fragment in str(caught.value), str(caught.value)


@pytest.fixture(scope="module")
def tuned(app, preset, tmp_path_factory):
    """One session of the app, loaded, distilled, a weight selected and up-tuned: what every refused event
    must leave as it is (its log, its final weights, its selection)."""
    from gradio_client import Client

    from .test_app import load_and_distil, rows

    client = Client(app, verbose=False)
    heat = rows(load_and_distil(client, preset)["heat"])
    concept, cls = heat[0]["concept"], next(c for c in heat[0] if c != "concept")
    client.predict(concept, cls, api_name="/select")
    client.predict("Up-tune", 2.0, api_name="/apply")
    folder = tmp_path_factory.mktemp("logs")
    good = Path(client.predict(api_name="/export_log")).read_text()
    (folder / "nan.json").write_text(good.replace(f'"version": {LOG_VERSION}', '"version": NaN', 1))
    (folder / "other.json").write_text('{"format": "something else"}')
    return {"client": client, "concept": concept, "class": cls, "logs": folder}


def _snapshot(client) -> tuple:
    """The session's log (actions and parameters), its final weights, and what its selection previews as."""
    log = json.loads(Path(client.predict(api_name="/export_log")).read_text())
    preview = client.predict("Down-tune", 2.0, api_name="/preview")
    return [(e["action"], e["params"]) for e in log["entries"]], log["final"], preview.split("**")[1]


def _load(preset, **changes) -> tuple:
    """/load's arguments from the preset, with ``changes`` by field name."""
    from infincond.ui.settings import SETUP_FIELDS

    values = dict(zip(SETUP_FIELDS, preset.fields(), strict=True)) | changes
    return (*values.values(), None)


#: Refused events on a tuned session: (endpoint, arguments from (preset, repos, bad, the tuned fixture), fragment).
APP_CASES = {
    "a teacher that does not exist": ("/load", lambda p, r, b, t: _load(p, teacher="./missing-teacher"),
                                      "teacher path './missing-teacher' does not exist"),
    "a CLIP encoder as the teacher": ("/load", lambda p, r, b, t: _load(p, teacher=r["clip"]),
                                      "not a trained image classifier"),
    "a classifier as the encoder": ("/load", lambda p, r, b, t: _load(p, encoder=r["teacher"]),
                                    "not a dual image-text encoder"),
    "a dataset id with two slashes": ("/load", lambda p, r, b, t: _load(p, dataset="owner/name/extra"),
                                      "does not exist"),
    "a sample of 1": ("/load", lambda p, r, b, t: _load(p, samples=1), "Value 1 is less than minimum value 20"),
    "no concept typed": ("/load", lambda p, r, b, t: _load(p, corpus="typed", concepts_text=""),
                         "Type at least one concept"),
    "an unknown corpus": ("/load", lambda p, r, b, t: _load(p, corpus="everything"),
                          "'everything' (type: <class 'str'>) is not in the list of choices"),
    "a group column the dataset lacks": ("/load", lambda p, r, b, t: _load(p, group_column="lake"),
                                         "'lake' is not a column of the dataset; pass one of"),
    "NEC 0": ("/distill", lambda p, r, b, t: (0,), "Value 0 is less than minimum value 1"),
    "NEC 1000": ("/distill", lambda p, r, b, t: (1000,), "Value 1000 is greater than maximum value 200"),
    "a student the sweep lacks": ("/pick_student", lambda p, r, b, t: (7,),
                                  "No student at NEC 7; the sweep has [1, 2, 3, 5, 10, 20]"),
    "an unknown concept": ("/select", lambda p, r, b, t: ("unicorn", t["class"]), "Unknown concept 'unicorn'"),
    "an unknown class": ("/select", lambda p, r, b, t: (t["concept"], "dragon"), "Unknown class 'dragon'"),
    "no top concepts": ("/view", lambda p, r, b, t: (0, "any class"), "Value 0 is less than minimum value 5"),
    "an unknown order": ("/view", lambda p, r, b, t: (20, "sideways"),
                         "'sideways' (type: <class 'str'>) is not in the list of choices"),
    "a finding that is not there": ("/finding", lambda p, r, b, t: (999,), "finding must be from 0 to"),
    "an image that is not there": ("/image", lambda p, r, b, t: (999,), "image must be from 0 to"),
    "an unknown edit": ("/preview", lambda p, r, b, t: ("Boost", 2.0),
                        "'Boost' (type: <class 'str'>) is not in the list of choices"),
    "a factor below 1": ("/apply", lambda p, r, b, t: ("Up-tune", 0.5), "Value 0.5 is less than minimum value 1.1"),
    "releasing what is not a proxy": ("/apply", lambda p, r, b, t: ("Remove", 2.0, ["unicorn"]),
                                      "not in the list of choices"),
    "a blend above 1": ("/blend", lambda p, r, b, t: (1.5,), "Value 1.5 is greater than maximum value 1"),
    "a step that never was": ("/jump", lambda p, r, b, t: (999,), "There is no step 999"),
    "a negative step": ("/jump", lambda p, r, b, t: (-1,), "Value -1 is less than minimum value 0"),
    "no step": ("/jump", lambda p, r, b, t: (None,), "step must be a whole number"),
    "a log with NaN": ("/import_log", lambda p, r, b, t: (handle(t["logs"] / "nan.json"),),
                       "NaN, which is not a number"),
    "another program's file": ("/import_log", lambda p, r, b, t: (handle(t["logs"] / "other.json"),),
                               "not an InFiConD tuning log"),
    "no log": ("/import_log", lambda p, r, b, t: (None,), "Drop a tuning log"),
    "saving into a project": ("/save", lambda p, r, b, t: (str(b["project"]),), "holds other files"),
    "saving where a file is": ("/save", lambda p, r, b, t: (str(b["root"] / "a-file"),), "it is a file, not a folder"),
    "saving nowhere": ("/save", lambda p, r, b, t: ("",), "Give a folder"),
    "pushing to a/b/c": ("/push", lambda p, r, b, t: ("a/b/c", False), "not a valid Hub repo id"),
    "pushing to a name with a space": ("/push", lambda p, r, b, t: ("me/my student", False),
                                       "not a valid Hub repo id"),
}


def handle(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


@pytest.mark.parametrize("case", APP_CASES)
def test_the_app_refuses_bad_events_and_keeps_the_session(tuned, preset, repos, bad, case):
    from gradio_client.exceptions import AppError

    client = tuned["client"]
    before = _snapshot(client)
    assert before[2] == f"What if: down-tune '{tuned['concept']}' for {tuned['class']} x2"
    api, args, fragment = APP_CASES[case]
    with pytest.raises(AppError) as caught:
        client.predict(*args(preset, repos, bad, tuned), api_name=api)
    assert fragment in str(caught.value), str(caught.value)
    after = _snapshot(client)  # the log, the weights and the selection are as they were
    assert after[1:] == before[1:] and after[0] == before[0]


def test_a_contradictory_edit_is_refused_and_changes_nothing(tuned):
    from gradio_client.exceptions import AppError

    from .test_app import call, rows

    client = tuned["client"]
    client.predict("Remove", 2.0, api_name="/apply")

    def log() -> dict:
        return json.loads(Path(client.predict(api_name="/export_log")).read_text())

    before = log()
    with pytest.raises(AppError, match="Contradictory edit"):
        client.predict("Up-tune", 2.0, api_name="/apply")
    assert log()["entries"] == before["entries"] and log()["final"] == before["final"]
    client.predict(api_name="/undo")
    # The next edit applies to the weight selected before the refused events: nothing moved the selection.
    out = call(client, "apply", "Down-tune", 2.0)
    assert f"down-tune '{tuned['concept']}' for {tuned['class']} x2" in rows(out["log_table"])[-1]["action"]


def test_a_concept_line_longer_than_the_encoder_reads_is_named(encoder):
    runaway = "stripes " * 13_125  # a 105,000-character line
    with pytest.raises(ConfigError) as caught:
        encoder.encode_text(["grass", runaway])
    message = str(caught.value)
    assert message.startswith("Concept 2 of the corpus, 'stripes stripes") and "105,000 characters" in message
    config = encoder.model.config.text_config
    assert f"the encoder reads at most {config.max_position_embeddings}" in message


def test_the_page_says_which_images_were_left_out_and_which_concepts_merged(features):
    from dataclasses import replace

    from infincond.ui import Workspace
    from infincond.ui.views import CLASS_COLUMNS, configuration

    empty = configuration(Workspace())
    assert empty["class_table"]["headers"] == CLASS_COLUMNS  # headers before Load, not "1 2 3"
    failed = [{"image_id": 17, "position": 3, "error": "cannot identify image file"},
              {"image_id": 40, "position": 9, "error": "truncated"}]
    ws = Workspace()
    ws.load_features(replace(features, provenance={**features.provenance, "failed_images": failed,
                                                   "merged_concepts": [["car", "cars"]]}))
    text = configuration(ws)["config_md"]
    assert "**2 image(s) could not be read and were left out** (dataset rows 17, 40)." in text
    assert "cars → car" in text
