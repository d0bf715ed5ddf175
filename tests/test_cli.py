import json
import re

from infincond.cli import main


def test_distill_command_prints_metrics_and_writes_the_student(repos, tmp_path, capsys):
    out = tmp_path / "student"
    code = main(["distill", "--teacher", repos["teacher"], "--dataset", repos["dataset"], "--encoder", repos["clip"],
                 "--extra-concepts", "red,green,blue,circle", "--samples", "60", "--nec", "3", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0
    for word in ("fidelity", "student accuracy", "teacher accuracy", "NEC per class"):
        assert word in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{100 * metrics['fidelity']:.1f}%" in printed
    assert metrics["nec"] <= 3 and metrics["n_images"] == 12
    assert (out / "model.safetensors").exists()


def test_user_errors_exit_with_a_message(repos, tmp_path, capsys):
    code = main(["distill", "--teacher", repos["teacher"], "--dataset", str(tmp_path / "missing"), "--encoder",
                 repos["clip"], "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    lines = re.split(r"[\r\n]", err)  # the progress bar is cleared with carriage returns
    assert any(line.startswith("error: The dataset path") and line.endswith("looks like 'owner/name').")
               for line in lines)
