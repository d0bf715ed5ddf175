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
def library_cases(repos, bad):
    log, root = bad["log"], bad["root"]

    def replay(change):
        return lambda: TuningSession.replay(FEATURES, broken_log(log, change))

    def replay_text(text: str):
        path = root / f"log-{abs(hash(text)) % 10**8}.json"
        path.write_text(text)
        return lambda: TuningSession.replay(FEATURES, path)

    def set_weight(value):
        def change(data):
            data["initial"]["weight"][0][0] = value
        return change

    nan_text = json.dumps(log).replace(f'"version": {LOG_VERSION}', '"version": NaN', 1)
    return [
        ("teacher path that does not exist", lambda: Teacher.from_pretrained("./no/such/teacher"), LoadError,
         "teacher path './no/such/teacher' does not exist"),
        ("a CLIP encoder given as the teacher", lambda: Teacher.from_pretrained(repos["clip"]), LoadError,
         "not a trained image classifier"),
        ("a teacher with truncated weights", lambda: Teacher.from_pretrained(bad["truncated_teacher"]), LoadError,
         "damaged or incomplete"),
        ("a classifier given as the encoder", lambda: ConceptEncoder.from_pretrained(repos["teacher"]), LoadError,
         "not a dual image-text encoder"),
        ("a repo id with two slashes", lambda: ImageSource.load(DataConfig("owner/name/extra")), LoadError,
         "does not exist"),
        ("a repo id with spaces", lambda: Teacher.from_pretrained("my teacher"), LoadError,
         "neither an existing local path nor a valid Hub repo id"),
        ("an empty teacher", lambda: Teacher.from_pretrained(""), LoadError, "No teacher given"),
        ("one sample", lambda: DataConfig(repos["dataset"], samples=1), ConfigError, "samples must be at least 2"),
        ("a fractional sample size", lambda: DataConfig(repos["dataset"], samples=10.5), ConfigError,
         "samples must be a whole number"),
        ("val_fraction NaN", lambda: DataConfig(repos["dataset"], val_fraction=float("nan")), ConfigError,
         "val_fraction must be a finite number"),
        ("temperature NaN", lambda: DistillConfig(temperature=float("nan")), ConfigError,
         "temperature must be a finite number"),
        ("temperature 0", lambda: DistillConfig(temperature=0), ConfigError, "temperature must be a number in (0"),
        ("l1 infinite", lambda: DistillConfig(l1=float("inf")), ConfigError, "l1 must be a finite number"),
        ("label weight below 0", lambda: DistillConfig(label_weight=-0.1), ConfigError, "label_weight (alpha)"),
        ("a fractional NEC", lambda: DistillConfig(nec=2.5), ConfigError, "nec (effective concepts per class) must"),
        ("an unknown method", lambda: DistillConfig(method="svm"), ConfigError, "method must be one of"),
        ("a template with two placeholders", lambda: ExtractConfig(template="{} and {}"), ConfigError,
         "exactly one '{}'"),
        ("a template without a placeholder", lambda: ExtractConfig(template="a photo"), ConfigError,
         "exactly one '{}'"),
        ("a malformed template", lambda: ExtractConfig(template="a {photo"), ConfigError, "malformed"),
        ("batch size 0", lambda: ExtractConfig(batch_size=0), ConfigError, "batch_size must be at least 1"),
        ("an unknown region mode", lambda: ExtractConfig(region_mode="pixels"), ConfigError, "region_mode"),
        ("a concept file that is binary", lambda: ConceptCorpus.from_file(root / "binary.txt"), ConfigError,
         "cannot be read as UTF-8 text"),
        ("a student with truncated weights", lambda: ConceptStudent.from_pretrained(bad["truncated_student"]),
         LoadError, "damaged or incomplete"),
        ("a student path that does not exist", lambda: ConceptStudent.from_pretrained("./no/student"), LoadError,
         "does not exist"),
        ("a corrupt image to predict", lambda: bad["student"].predict(root / "corrupt.jpg"), LoadError,
         "cannot be read as an image"),
        ("saving into a project folder", lambda: bad["student"].save_pretrained(bad["project"]), StorageError,
         "holds other files (README.md, config.json)"),
        ("saving where a file is", lambda: bad["student"].save_pretrained(root / "a-file"), StorageError,
         "it is a file, not a folder"),
        ("saving under a file", lambda: bad["student"].save_pretrained(root / "a-file" / "student"), StorageError,
         "is a file, not a folder"),
        ("saving where nothing may be written", lambda: bad["student"].save_pretrained(unwritable(root)),
         StorageError, "read-only, or you may not write there"),
        ("pushing to a repo id with two slashes", lambda: bad["student"].push_to_hub("a/b/c"), ConfigError,
         "not a valid Hub repo id: it has more than one '/'"),
        ("pushing to a repo id with a space", lambda: bad["student"].push_to_hub("me/my student"), ConfigError,
         "not a valid Hub repo id"),
        ("a log that is not JSON", replay_text("{not json"), ConfigError, "Cannot read the tuning log"),
        ("a log with NaN weights", replay_text(nan_text), ConfigError, "NaN, which is not a number"),
        ("a log nested absurdly deep", replay_text("[" * 100_000 + "]" * 100_000), ConfigError,
         "nested too deeply"),
        ("a log of another program", replay(lambda d: d.update(format="other")), ConfigError,
         "not an InFiConD tuning log"),
        ("a log from a future version", replay(lambda d: d.update(version=99)), ConfigError,
         "version 99 is not supported"),
        ("a log without its initial student", replay(lambda d: d.pop("initial")), ConfigError,
         "initial is missing"),
        ("a log with a NaN weight given as a dict", replay(set_weight(float("nan"))), ConfigError,
         "initial.weight holds a value that is not a finite number"),
        ("a log with a text weight", replay(set_weight("big")), ConfigError, "initial.weight must be an array"),
        ("a log with weights of another shape", replay(lambda d: d["initial"]["weight"].pop()), ConfigError,
         "initial.bias has shape"),
        ("a log with an unknown action", replay(lambda d: d["entries"][1].update(action="explode")), ConfigError,
         "entries[1].action must be"),
        ("a log with a text factor", replay(lambda d: d["entries"][1]["params"].update(factor="abc")), ConfigError,
         "entries[1].params.factor must be a finite number"),
        ("a log with a factor of 1", replay(lambda d: d["entries"][1]["params"].update(factor=1)), ConfigError,
         "entries[1].params.factor"),
        ("a log with a label weight of 2", replay(lambda d: d["entries"][0]["params"].update(label_weight=2)),
         ConfigError, "entries[0].params.label_weight must be a number in [0, 1], not 2"),
        ("a log jumping to a step that never was",
         replay(lambda d: d["entries"].append({**d["entries"][1], "action": "jump", "params": {"step": 99}})),
         ConfigError, "entries[2].params.step must be a step number from 0 to 1"),
        ("a log with bad distillation settings", replay(lambda d: d["initial"]["config"].update(temperature=-1)),
         ConfigError, "initial.config"),
        ("a log editing a concept the student lacks",
         replay(lambda d: d["entries"][1]["params"].update(concept="unicorn")), ConfigError,
         "Step 1 of the tuning log (edit) cannot be replayed: Unknown concept 'unicorn'"),
        ("a label weight of NaN", lambda: TuningSession(FEATURES, STUDENT).set_label_weight(float("nan")),
         ConfigError, "label_weight (alpha) must be a finite number in [0, 1], not nan"),
    ]


def test_the_library_refuses_bad_inputs_clearly(repos, bad):
    cases = library_cases(repos, bad)
    assert len(cases) >= 40
    readme = (bad["project"] / "README.md").read_text()
    for name, action, error, fragment in cases:
        with pytest.raises(error) as caught:
            action()
        assert fragment in str(caught.value), f"{name}: {caught.value}"
    # User-fixable settings are ValueErrors too; nothing was written over the user's files.
    assert issubclass(ConfigError, ValueError) and (bad["project"] / "README.md").read_text() == readme
    assert json.loads((bad["project"] / "config.json").read_text()) == {"mine": True}


# -- the CLI: one line on stderr, exit status 2, no traceback -------------------------------------------------
def cli_cases(repos, bad, out):
    common = ["--teacher", repos["teacher"], "--dataset", repos["dataset"], "--encoder", repos["clip"], "--out", out]
    return [
        (["distill", *common, "--temperature", "nan"], "temperature must be a finite number"),
        (["distill", *common, "--nec", "0"], "nec (effective concepts per class) must be at least 1"),
        (["distill", *common, "--samples", "1"], "samples must be at least 2"),
        (["distill", *common, "--val-fraction", "1.5"], "val_fraction must be a number in (0, 1)"),
        (["distill", *common, "--template", "{} {}"], "exactly one '{}'"),
        (["distill", *common, "--teacher", "./missing-teacher"], "teacher path './missing-teacher' does not exist"),
        (["distill", *common, "--teacher", repos["clip"]], "not a trained image classifier"),
        (["distill", *common, "--corpus", "missing-corpus.txt"], "does not exist"),
        (["distill", *common[:-1], str(bad["project"])], "holds other files"),
        (["push", "--student", str(bad["student_dir"]), "--repo", "a/b/c"], "not a valid Hub repo id"),
        (["push", "--student", "./no/student", "--repo", "alice/x"], "does not exist"),
    ]


def test_the_cli_prints_one_line_and_exits_2(repos, bad, tmp_path, capsys):
    for argv, fragment in cli_cases(repos, bad, str(tmp_path / "out")):
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


def test_the_app_refuses_bad_events_and_keeps_the_session(app, preset, repos, bad, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from .test_app import call, load_and_distil, rows

    fresh = Client(app, verbose=False)
    for api, args in (("/apply", ("Down-tune", 2.0)), ("/export_log", ()), ("/download", ()),
                      ("/undo", ()), ("/distill", (3,)),
                      ("/save", (str(tmp_path / "early"),))):
        with pytest.raises(AppError, match="(Distil a student|Load a teacher and a dataset) first"):
            fresh.predict(*args, api_name=api)  # events out of order
    client = Client(app, verbose=False)
    out = load_and_distil(client, preset)
    heat = rows(out["heat"])
    concept, cls = heat[0]["concept"], next(c for c in heat[0] if c != "concept")
    client.predict(concept, cls, api_name="/select")
    client.predict("Up-tune", 2.0, api_name="/apply")

    def snapshot() -> tuple:
        log = json.loads(Path(client.predict(api_name="/export_log")).read_text())
        preview = client.predict("Down-tune", 2.0, api_name="/preview")
        return [(e["action"], e["params"]) for e in log["entries"]], log["final"], preview.split("**")[1]

    before = snapshot()
    assert before[2] == f"What if: down-tune '{concept}' for {cls} x2"
    good_log = Path(client.predict(api_name="/export_log"))
    nan_log = tmp_path / "nan.json"
    nan_log.write_text(good_log.read_text().replace(f'"version": {LOG_VERSION}', '"version": NaN', 1))
    other = tmp_path / "other.json"
    other.write_text('{"format": "something else"}')
    load = [preset.teacher, preset.dataset, preset.config_name or "", preset.split or "", preset.image_column,
            preset.label_column, preset.encoder, preset.corpus, preset.concepts_text, preset.samples, preset.group_column,
            None]

    def with_load(**changes):
        args = list(load)
        for index, value in changes.items():
            args[int(index[1:])] = value
        return tuple(args)

    events = [
        ("/load", with_load(a0="./missing-teacher"), "teacher path './missing-teacher' does not exist"),
        ("/load", with_load(a0=repos["clip"]), "not a trained image classifier"),
        ("/load", with_load(a6=repos["teacher"]), "not a dual image-text encoder"),
        ("/load", with_load(a1="owner/name/extra"), "does not exist"),
        ("/load", with_load(a9=1), "Value 1 is less than minimum value 20"),  # Gradio checks its bounds
        ("/load", with_load(a7="typed", a8=""), "Type at least one concept"),
        ("/load", with_load(a7="everything"), "'everything' (type: <class 'str'>) is not in the list of choices"),
        ("/distill", (0,), "Value 0 is less than minimum value 1"),
        ("/distill", (1000,), "Value 1000 is greater than maximum value 200"),
        ("/pick_student", (7,), "No student at NEC 7; the sweep has [1, 2, 3, 5, 10, 20]"),
        ("/select", ("unicorn", cls), "Unknown concept 'unicorn'"),
        ("/select", (concept, "dragon"), "Unknown class 'dragon'"),
        ("/view", (0, "any class"), "Value 0 is less than minimum value 5"),
        ("/view", (20, "sideways"), "'sideways' (type: <class 'str'>) is not in the list of choices"),
        ("/preview", ("Boost", 2.0), "'Boost' (type: <class 'str'>) is not in the list of choices"),
        ("/apply", ("Up-tune", 0.5), "Value 0.5 is less than minimum value 1.1"),
        ("/apply", ("Remove", 2.0), None),  # allowed: removed below, then refused twice
        ("/apply", ("Up-tune", 2.0), "Contradictory edit"),
        ("/blend", (1.5,), "Value 1.5 is greater than maximum value 1"),
        ("/jump", (999,), "There is no step 999"),
        ("/jump", (-1,), "Value -1 is less than minimum value 0"),
        ("/jump", (None,), "step must be a whole number"),
        ("/import_log", (handle_file(str(nan_log)),), "NaN, which is not a number"),
        ("/import_log", (handle_file(str(other)),), "not an InFiConD tuning log"),
        ("/import_log", (None,), "Drop a tuning log"),
        ("/save", (str(bad["project"]),), "holds other files"),
        ("/save", (str(bad["root"] / "a-file"),), "it is a file, not a folder"),
        ("/save", ("",), "Give a folder"),
        ("/push", ("a/b/c", False), "not a valid Hub repo id"),
        ("/push", ("me/my student", False), "not a valid Hub repo id"),
    ]
    refused = 0
    for api, args, fragment in events:
        if fragment is None:  # a valid action that sets up the next refusal; it is undone at once
            client.predict(*args, api_name=api)
            continue
        with pytest.raises(AppError) as caught:
            client.predict(*args, api_name=api)
        assert fragment in str(caught.value), (api, args, str(caught.value))
        refused += 1
        if api == "/apply" and fragment == "Contradictory edit":
            client.predict(api_name="/undo")
            continue
        after = snapshot()
        assert after[1:] == before[1:] and after[0][: len(before[0])] == before[0], (api, args)
    assert refused >= 25
    # The next edit applies to the weight selected before the refused events: nothing moved the selection.
    out = call(client, "apply", "Down-tune", 2.0)
    assert f"down-tune '{concept}' for {cls} x2" in rows(out["log_table"])[-1]["action"]
