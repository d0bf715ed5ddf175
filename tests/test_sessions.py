"""Many sessions and long ones: eight clients at once share one copy of the models, features and sweep
while never seeing each other's students; a session survives a server killed mid-session (restart, restore:
the same weights, every edit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gradio_client import Client

from infincond.shared import SharedCache
from infincond.ui import build_app, launch_kwargs, shapes_preset

from .conftest import _free_port
from .test_app import call, load_and_distil, rows

ROOT = Path(__file__).resolve().parents[1]


def test_eight_sessions_share_models_and_features_and_stay_apart(preset, tmp_path):
    shared = SharedCache()
    demo = build_app({"Shapes world (offline)": preset}, cache_dir=tmp_path / "cache", shared=shared)
    port = _free_port()
    demo.queue(default_concurrency_limit=8).launch(server_port=port, prevent_thread_lock=True, quiet=True,
                                                    **launch_kwargs())
    url = f"http://127.0.0.1:{port}/"
    try:
        def session(i: int) -> tuple[list, str]:
            client = Client(url, verbose=False)
            out = load_and_distil(client, preset)
            heat = rows(out["heat"])
            row = heat[i % len(heat)]
            concept, cls = row["concept"], [name for name in row if name != "concept"][i % (len(row) - 1)]
            call(client, "select", concept, cls, 20, "any class")
            call(client, "apply", "Remove", 2.0, 20, "any class")
            log = json.loads(Path(client.predict(api_name="/export_log")).read_text())
            return [e["summary"] for e in log["entries"]], f"remove '{concept}' for {cls}"

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(session, range(8)))
    finally:
        demo.close()
    for summaries, mine in results:  # each session sees its own edit, and only it (with the proxies it held)
        assert len(summaries) == 2 and summaries[0] == "distilled student" and summaries[1].split(",")[0] == mine
    # One load of each model, one extraction, one sweep, for all eight sessions.
    assert shared.loads["teacher"] == shared.loads["encoder"] == shared.loads["features"] == 1
    assert shared.loads["sweep"] == 1 and shared.loads["source"] == 1


def _serve(world, port: int, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "INFINCOND_CACHE": str(cache), "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--world", str(world.root), "--port", str(port),
                             "--samples", "200"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert process.poll() is None, "the app exited"
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the app did not start in time")


def test_a_session_survives_a_killed_server(world, tmp_path):
    preset, port = shapes_preset(world, samples=200), _free_port()
    url = f"http://127.0.0.1:{port}/"
    server = _serve(world, port, tmp_path / "cache")
    try:
        _wait(url, server)
        client = Client(url, verbose=False)
        out = load_and_distil(client, preset)
        session_id = client.predict(api_name="/session")
        heat = rows(out["heat"])
        concept, cls = heat[0]["concept"], [name for name in heat[0] if name != "concept"][0]
        call(client, "select", concept, cls, 20, "any class")
        call(client, "apply", "Up-tune", 3.0, 20, "any class")
        call(client, "blend", 0.5, 20, "any class")
        call(client, "select", heat[1]["concept"], cls, 20, "any class")
        call(client, "apply", "Remove", 2.0, 20, "any class")
        call(client, "undo", 20, "any class")
        call(client, "apply", "Lock", 2.0, 20, "any class")
        before = json.loads(Path(client.predict(api_name="/export_log")).read_text())
    finally:
        server.send_signal(signal.SIGKILL)  # no chance to save anything on the way out
        server.wait(30)
    server = _serve(world, port, tmp_path / "cache")
    try:
        _wait(url, server)
        client = Client(url, verbose=False)
        out = call(client, "restore", session_id, 20, "any class")
        assert "Restored your session: 5 tuning action(s) replayed." in str(out["restore_md"])
        after = json.loads(Path(client.predict(api_name="/export_log")).read_text())
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    assert [e["summary"] for e in after["entries"]] == [e["summary"] for e in before["entries"]]  # zero edits lost
    np.testing.assert_allclose(after["final"]["weight"], before["final"]["weight"], atol=1e-6)
    assert after["final"]["state"] == before["final"]["state"]


def test_one_sessions_events_run_one_at_a_time_and_other_sessions_do_not_wait(tmp_path):
    """A chained refit and an Apply clicked meanwhile reach the server at once: the guard runs one
    workspace's events in turn (so neither sees the other half done), while another workspace goes on."""
    import threading

    from infincond.ui.app import _guard
    from infincond.ui.workspace import Workspace

    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    started = threading.Barrier(3)

    def event(ws, name):
        start = time.perf_counter()
        time.sleep(0.3)
        spans[name].append((start, time.perf_counter()))
        return ws

    guarded = _guard(event)
    a, b = Workspace(cache_dir=tmp_path / "a"), Workspace(cache_dir=tmp_path / "b")

    def run(ws, name):
        started.wait()
        guarded(ws, name)

    threads = [threading.Thread(target=run, args=args) for args in ((a, "a"), (a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (s1, e1), (s2, e2) = sorted(spans["a"])
    assert s2 >= e1  # the same workspace: one after the other
    (sb, eb), = spans["b"]
    assert sb < e1  # another workspace: not held up by the first one's events
