"""Many sessions and long ones: eight clients at once share one copy of the models, features and sweep
while never seeing each other's students; a session survives a server killed mid-session (restart, restore:
the same weights, every edit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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
            call(client, "select", concept, cls)
            call(client, "apply", "Remove", 2.0)
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


def test_long_jobs_queue_in_their_own_lane_with_their_place_known_while_light_events_go_on(preset, tmp_path,
                                                                                              monkeypatch):
    from gradio_client.utils import Status

    from infincond.ui import events
    from infincond.ui.workspace import Workspace

    monkeypatch.setattr(events, "heavy_limit", lambda cores=None: 1)  # one long job at a time, whatever the cores
    demo = build_app({"Shapes world (offline)": preset}, cache_dir=tmp_path / "cache")
    port = _free_port()
    demo.queue(default_concurrency_limit=8).launch(server_port=port, prevent_thread_lock=True, quiet=True,
                                                    **launch_kwargs())
    url = f"http://127.0.0.1:{port}/"
    started, release = threading.Event(), threading.Event()
    distill = Workspace.distill

    def held(self, *args, **kwargs):  # the first long job holds its lane until the test releases it
        if not started.is_set():
            started.set()
            assert release.wait(120)
        return distill(self, *args, **kwargs)

    try:
        first, second, light = (Client(url, verbose=False) for _ in range(3))
        heat = rows(load_and_distil(light, preset)["heat"])
        for client in (first, second):
            load_and_distil(client, preset)
        monkeypatch.setattr(Workspace, "distill", held)
        running = first.submit(3, api_name="/distill")
        assert started.wait(120)
        waiting = second.submit(3, api_name="/distill")
        deadline = time.monotonic() + 60
        while waiting.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition (the queue's answer), not ordering threads
        status = waiting.status()
        assert status.code == Status.IN_QUEUE and status.rank == 0 and status.queue_size >= 1  # first in line
        # Light events of a third user run while the long job holds its lane and another waits.
        concept, cls = heat[1]["concept"], [name for name in heat[1] if name != "concept"][1]  # not the default
        assert concept in call(light, "select", concept, cls)["selection_md"]
        call(light, "preview", "Down-tune", 2.0)
        assert not running.done() and not waiting.done()
        release.set()
        running.result(timeout=120)
        waiting.result(timeout=120)
    finally:
        release.set()
        demo.close()


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
        call(client, "select", concept, cls)
        call(client, "apply", "Up-tune", 3.0)
        call(client, "blend", 0.5)
        call(client, "select", heat[1]["concept"], cls)
        call(client, "apply", "Remove", 2.0)
        call(client, "undo")
        call(client, "apply", "Lock", 2.0)
        before = json.loads(Path(client.predict(api_name="/export_log")).read_text())
    finally:
        server.send_signal(signal.SIGKILL)  # no chance to save anything on the way out
        server.wait(30)
    server = _serve(world, port, tmp_path / "cache")
    try:
        _wait(url, server)
        client = Client(url, verbose=False)
        out = call(client, "restore", session_id)
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
    workspace's events in turn (so neither sees the other half done), while another workspace goes on.
    Ordered by events, not by sleeps: the first event holds until released, and the workspace's lock says
    when the second one is waiting for it."""
    import threading
    from types import SimpleNamespace

    from infincond.ui.events import Events
    from infincond.ui.workspace import Workspace

    class WatchedLock:
        """The workspace's lock, telling when a second event starts waiting for it."""

        def __init__(self) -> None:
            self.lock, self.callers, self.second_waits = threading.RLock(), 0, threading.Event()

        def __enter__(self):
            self.callers += 1
            if self.callers == 2:
                self.second_waits.set()
            self.lock.acquire()
            return self

        def __exit__(self, *exc) -> None:
            self.lock.release()

    entered = {name: threading.Event() for name in ("a1", "a2", "b")}
    release = threading.Event()

    def handler(ws, name):
        entered[name].set()
        if name == "a1":
            assert release.wait(30)

    events = Events(SimpleNamespace(state="state"), Workspace)
    guarded = events.guard("session", handler)
    a, b = Workspace(cache_dir=str(tmp_path / "a")), Workspace(cache_dir=str(tmp_path / "b"))
    a.lock = WatchedLock()
    first = threading.Thread(target=guarded, args=(a, "a1"))
    first.start()
    assert entered["a1"].wait(30)
    second = threading.Thread(target=guarded, args=(a, "a2"))
    second.start()
    assert a.lock.second_waits.wait(30)
    other = threading.Thread(target=guarded, args=(b, "b"))
    other.start()
    other.join(30)
    assert entered["b"].is_set() and not other.is_alive()  # another workspace: not held up by the first one's
    assert not entered["a2"].is_set()  # the same workspace: the second waits for the first
    release.set()
    for thread in (first, second):
        thread.join(30)
    assert entered["a2"].is_set()
