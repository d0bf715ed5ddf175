"""Many people on one app: per-event latency at 1, 8 and 16 users, each with one more user re-distilling in a
loop, side by side with a no-op event queued the same way in the same run; the server's CPU milliseconds per
event; its memory with one session and with all of them.

The app runs as users run it (``python app.py --samples S --world W``: its own process, its own queue), and
every user is a ``gradio_client`` in a thread of this process, with its own session. Each user loads the
Shapes world, distils, applies one edit, then repeats: select a (concept, class), the what-if preview, undo,
redo and the no-op (``/session``: it returns the session's id and does nothing else: Gradio's own cost).
One more user loads and then distils again and again (the long job) for as long as the others run.

- Latency: p50 / p95 per event and per number of users, the no-op's beside them, and the ratio of each
  event's p95 to the no-op's p95 (target: at most 1.5x at 8 users + 1 distilling); events per second;
  failures (target 0); every user checks that each answer names its own selection (no session sees another's).
- Server CPU per event: one user, no other load, each event repeated; the server process's CPU time (every
  thread: the handler and Gradio's own pre- and post-processing) over the repeats.
- Memory: the server's resident set with one session, and with every user's (target: within 2x of one).
- Delay from a long job: one user's select with nobody else, then with one user distilling or loading in a
  loop (target: the difference at most one select's own time).

Run: python benchmarks/bench_load.py [--samples 6000] [--users 1,8,16] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_app import cells, load  # the same session set-up as the single-user benchmark
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ("select", "preview", "undo", "redo", "no-op")
SESSIONS = [0]  # sessions started on the server so far (none is closed during the run)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python app.py`` in its own process; its CPU seconds and resident set read from /proc."""

    def __init__(self, samples: int, world: str, root: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "PYTHONPATH": str(root)}  # another checkout's app runs its own package
        self.process = subprocess.Popen([sys.executable, str(root / "app.py"), "--port", str(self.port),
                                         "--samples", str(samples), "--world", world],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(self.process.stderr.read().decode()[-3000:]) from None
                time.sleep(0.5)
        raise RuntimeError("the app did not start in 300 s")

    def cpu_seconds(self) -> float:
        """CPU time of every thread of the server (schedstat: nanoseconds; threads that ended are left out,
        so read it around short spans)."""
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total / 1e9

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def start_session(url: str, preset) -> tuple[Client, list[tuple[str, str]]]:
    """A new user: load, distil, one edit applied (so that undo and redo have something to do); the
    (concept, class) pairs of its heatmap."""
    client = Client(url, verbose=False, download_files=False)
    load(client, preset)
    pairs = cells(client, client.predict(5, api_name="/distill"))
    client.predict(*pairs[0], api_name="/select")
    client.predict("Down-tune", 2.0, api_name="/apply")
    SESSIONS[0] += 1
    return client, pairs


def user_loop(client: Client, pairs: list, rounds: int, seed: int, times: dict, failures: list,
              mixed: list) -> None:
    """``rounds`` of select, preview, undo, redo and the no-op; every answer checked to be this user's."""
    rng = random.Random(seed)
    own_id = client.predict(api_name="/session")
    selected = pairs[0]  # start_session selected it
    # Users start within a second of each other, as people do: all at the same instant put every user's first
    # event (a select, the first of each round) in one burst that no other event met (the no-op's first
    # call came after it): 6 of the 10 slowest selects of a run were that burst.
    time.sleep(rng.uniform(0.0, 1.0))
    times["began"].append(time.perf_counter())  # events per second count from the first user's start
    for _ in range(rounds):
        concept, cls = rng.choice([pair for pair in pairs if pair != selected])  # a select that changes something
        selected = (concept, cls)
        calls = [("select", lambda c=concept, k=cls: client.predict(c, k, api_name="/select")),
                 ("preview", lambda: client.predict("Down-tune", 2.0, api_name="/preview")),
                 ("undo", lambda: client.predict(api_name="/undo")),
                 ("redo", lambda: client.predict(api_name="/redo")),
                 ("no-op", lambda: client.predict(api_name="/session"))]
        for name, call in calls:
            start = time.perf_counter()
            try:
                out = call()
            except Exception as error:  # noqa: BLE001 - counted and shown
                failures.append(f"{name}: {type(error).__name__}: {error}"[:300])
                continue
            times[name].append(time.perf_counter() - start)
            text = json.dumps(out, default=str)
            if name == "select" and concept not in text:
                mixed.append(f"select of {concept!r} answered without it")
            if name == "no-op" and out != own_id:
                mixed.append(f"session id {out!r} instead of {own_id!r}")


def long_job(url: str, preset, stop: threading.Event, counts: dict, kind: str = "distil") -> None:
    """One more user re-distilling (or re-loading) until ``stop``."""
    client = Client(url, verbose=False, download_files=False)
    load(client, preset)
    SESSIONS[0] += 1
    nec = 3
    while not stop.is_set():
        if kind == "distil":
            nec = 3 if nec == 5 else 5  # another student each time: the sweep is cached, the student is new
            client.predict(nec, api_name="/distill")
        else:
            load(client, preset)
        counts[kind] = counts.get(kind, 0) + 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_users(server: Server, preset, users: int, rounds: int) -> dict:
    with ThreadPoolExecutor(users) as pool:
        sessions = list(pool.map(lambda _: start_session(server.url, preset), range(users)))
    memory = server.rss_mb()
    times = {name: [] for name in EVENTS} | {"began": []}
    failures, mixed, counts = [], [], {}
    stop = threading.Event()
    job = threading.Thread(target=long_job, args=(server.url, preset, stop, counts), daemon=True)
    job.start()
    time.sleep(1.0)  # the long job under way
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(lambda i: user_loop(*sessions[i], rounds, i, times, failures, mixed), range(users)))
    wall = time.perf_counter() - min(times.pop("began"))
    stop.set()
    job.join(120)
    return {"users": users, "times": times, "failures": failures, "mixed": mixed, "wall": wall,
            "events": sum(len(v) for v in times.values()), "long_jobs": counts.get("distil", 0), "memory": memory,
            "sessions": SESSIONS[0]}


def cpu_per_event(server: Server, preset, repeats: int) -> dict[str, float]:
    """Server CPU ms per event, one user, nothing else running."""
    client, pairs = start_session(server.url, preset)
    calls = {"select": lambda i: client.predict(*pairs[i % len(pairs)], api_name="/select"),
             "preview": lambda i: client.predict("Down-tune", 2.0, api_name="/preview"),
             "undo": lambda i: client.predict(api_name="/undo"),
             "redo": lambda i: client.predict(api_name="/redo"),
             "no-op": lambda i: client.predict(api_name="/session")}
    spent = {name: [] for name in calls}
    for i in range(repeats + 1):  # in the users' order (undo then redo: always something to undo)
        for name, call in calls.items():
            before = server.cpu_seconds()
            call(i)
            if i:  # the first round warms up
                spent[name].append(server.cpu_seconds() - before)
    return {name: 1000 * statistics.median(values) for name, values in spent.items()}


def long_job_delay(server: Server, preset, repeats: int) -> dict:
    """One user's select alone, then while another user distils (or loads) in a loop."""
    client, pairs = start_session(server.url, preset)

    def selects() -> list[float]:
        out = []
        for i in range(repeats):
            start = time.perf_counter()
            client.predict(*pairs[i % len(pairs)], api_name="/select")
            out.append(time.perf_counter() - start)
        return out

    result = {"alone": selects()}
    for kind in ("distil", "load"):
        stop, counts = threading.Event(), {}
        job = threading.Thread(target=long_job, args=(server.url, preset, stop, counts, kind), daemon=True)
        job.start()
        time.sleep(3.0 if kind == "distil" else 1.0)
        result[kind] = selects()
        stop.set()
        job.join(300)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--users", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=12, help="Rounds of the five events per user.")
    parser.add_argument("--repeats", type=int, default=20, help="Repeats per event for the CPU and delay parts.")
    parser.add_argument("--world", default=None, help="A built Shapes world (default: the cached default world).")
    parser.add_argument("--app-root", default=str(ROOT), help="Serve the app of this checkout (an older one, for "
                                                               "the before / after).")
    parser.add_argument("--parts", default="cpu,delay,users", help="Which parts to run (comma-separated).")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    from infincond.demo import load_world
    from infincond.ui import shapes_preset

    world = str(load_world(args.world).root)
    preset = shapes_preset(load_world(world, build=False), args.samples)
    root = Path(args.app_root)
    server = Server(args.samples, world, root)
    print(f"app of {root} at {server.url} (pid {server.process.pid}), {args.samples} images, {os.cpu_count()} cores, "
          f"started {time.strftime('%H:%M:%S')}")
    try:
        if "cpu" in parts:
            cpu = cpu_per_event(server, preset, args.repeats)
            print("\nServer CPU per event (one user, nothing else running; every thread of the server; median):")
            for name, ms in cpu.items():
                over = "" if name == "no-op" else f"   ({ms - cpu['no-op']:+.1f} ms over the no-op)"
                print(f"   {name:8} {ms:7.1f} ms{over}")
        if "delay" in parts:
            delay = long_job_delay(server, preset, args.repeats)
            alone = statistics.median(delay["alone"])
            print(f"\nOne user's select (median of {args.repeats}): alone {1000 * alone:.0f} ms; while another user "
                  f"distils in a loop {1000 * statistics.median(delay['distil']):.0f} ms (p95 "
                  f"{1000 * percentile(delay['distil'], 0.95):.0f}); while another loads in a loop "
                  f"{1000 * statistics.median(delay['load']):.0f} ms (p95 {1000 * percentile(delay['load'], 0.95):.0f}"
                  f"). Target: delay at most one select's own time ({1000 * alone:.0f} ms)")
    finally:
        server.close()
    results = []
    # Each number of users on a new server: its memory with one session, then with all.
    for n in args.users.split(",") if "users" in parts else []:
        server = Server(args.samples, world, root)
        try:
            SESSIONS[0] = 0
            start_session(server.url, preset)
            single_memory = server.rss_mb()
            results.append({**run_users(server, preset, int(n), args.rounds), "single": single_memory})
        finally:
            server.close()
    if not results:
        return
    print(f"\nUsers + 1 re-distilling in a loop ({args.rounds} rounds of {', '.join(EVENTS)} per user); "
          "round trips through gradio_client, ms")
    print(f"   {'users':>5} {'event':8} {'p50':>7} {'p95':>7} {'p95 / no-op p95':>16}")
    for result in results:
        noop95 = percentile(result["times"]["no-op"], 0.95)
        for name in EVENTS:
            values = result["times"][name]
            if not values:
                continue
            print(f"   {result['users']:5} {name:8} {1000 * statistics.median(values):7.0f} "
                  f"{1000 * percentile(values, 0.95):7.0f} {percentile(values, 0.95) / noop95:15.2f}x")
        print(f"   {result['users']:5} {result['events'] / result['wall']:.1f} events/s, "
              f"{len(result['failures'])} failures, {len(result['mixed'])} answers naming another's state, "
              f"{result['long_jobs']} distils meanwhile; server memory {result['memory']:.0f} MiB with "
              f"{result['sessions']} sessions open = {result['memory'] / result['single']:.2f}x of one session's "
              f"{result['single']:.0f} MiB")
        for failure in result["failures"][:3] + result["mixed"][:3]:
            print(f"         {failure}")


if __name__ == "__main__":
    main()
