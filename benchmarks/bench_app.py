"""How long the app takes per event, through gradio_client (the round trip: server time plus a local HTTP
hop), and how much memory sessions cost, side by side in one run.

1. The Shapes world's ``train`` split (6,000 images by default): load, distil (the whole NEC sweep), then
   each interactive event repeated: select a (concept, class), the what-if preview (at once, then "refit":
   its refitted second step, which the page chains after it), top-N and sort changes, opening a finding
   of the shortcut audit (its images with heat maps, its pair selected), apply (a refit), undo, redo and
   jump; beside them /session, which does nothing but return the session's id: Gradio's own round
   trip. Targets: select, preview, top-N, sort, undo, redo and jump at most 150 ms (median), a finding
   300 ms, apply and the preview's refit at most 1 s, distil at most 15 s.
2. Synthetic features at N = 50,000, K = 800, C = 10 (sessions started on a FeatureSet): the same events,
   within 2x of those targets.
3. Memory: the server's resident set after one session has loaded and distilled, and after eight sessions
   at once on the same preset (target: at most 1.5x).

``--url URL`` times an app already running there (an earlier version, for the before / after): parts 2 and
3 need this version's in-process app and are skipped. ``python benchmarks/bench_app.py [--samples 6000]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client

N_OPTIONS = (20, "any class")  # the heatmap's options, which the events of earlier versions took
DOWNLOAD = [False]  # --download: the client also fetches every image an event returns, as a browser does
TARGETS = {"no-op": 0.15, "select": 0.15, "preview": 0.15, "top-N": 0.15, "sort": 0.15, "undo": 0.15, "redo": 0.15,
           "jump": 0.15,
           "finding": 0.3, "apply": 1.0, "refit": 1.0, "distil": 15.0}


def rss_mb() -> float:
    """This process's resident set, MiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row, strict=True)) for row in table["data"]]


def cells(client: Client, out) -> list[tuple[str, str]]:
    """(concept, class) pairs of the heatmap's first rows, from a /distill result."""
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/distill"]["returns"]
    heat = next(value for spec, value in zip(names, out, strict=True) if spec["label"].startswith("Influence"))
    if "data" not in heat:  # the same student distilled again: the heatmap did not change, so it was not sent
        predict(client, 21, "any class", api_name="/view")  # a change of size sends it
        heat = predict(client, 20, "any class", api_name="/view")
    table = rows(heat)
    classes = [name for name in table[0] if name != "concept"]
    return [(row["concept"], classes[i % len(classes)]) for i, row in enumerate(table[:6])]


def predict(client: Client, *args, api_name: str):
    """``client.predict``, with the heatmap's options appended where the app's version still takes them
    (an earlier version run with --url, for the before / after)."""
    key = (id(client), api_name, len(args))
    if key not in LEGACY:  # read once, outside the timings
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api_name]["parameters"]
        LEGACY[key] = (len(parameters) >= len(args) + 2
                       and parameters[len(args) + 1].get("parameter_default") == N_OPTIONS[1])
    return client.predict(*args, *(N_OPTIONS if LEGACY[key] else ()), api_name=api_name)


LEGACY: dict[tuple, bool] = {}


def events(client: Client, repeats: int, distil: float) -> dict[str, list[float]]:
    """Each interactive event, ``repeats`` times (the student is brought back after each apply)."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    out = predict(client, 5, api_name="/distill")
    pairs = cells(client, out)
    times: dict[str, list[float]] = {name: [] for name in TARGETS}
    times["distil"].append(distil)
    for i in range(repeats):
        concept, cls = pairs[i % len(pairs)]
        times["no-op"].append(timed(lambda: client.predict(api_name="/session")))  # Gradio's own round trip
        times["select"].append(timed(lambda c=concept, k=cls: predict(client, c, k, api_name="/select")))
        times["preview"].append(timed(lambda: client.predict("Down-tune", 2.0, api_name="/preview")))
        if "/preview_refit" in endpoints:  # the what-if's second step: what Apply gives
            times["refit"].append(timed(lambda: client.predict("Down-tune", 2.0, api_name="/preview_refit")))
        if "/view" in endpoints:
            times["top-N"].append(timed(lambda n=10 + i % 2 * 10: client.predict(n, "any class", api_name="/view")))
            times["sort"].append(timed(lambda o=("selected class", "any class")[i % 2]: client.predict(
                20, o, api_name="/view")))
        if "/finding" in endpoints:  # the shortcut audit's view: a finding opened, its heat-mapped images
            times["finding"].append(timed(lambda j=i % 3: predict(client, j, api_name="/finding")))
        times["apply"].append(timed(lambda: predict(client, "Down-tune", 2.0, api_name="/apply")))
        times["undo"].append(timed(lambda: predict(client, api_name="/undo")))
        times["redo"].append(timed(lambda: predict(client, api_name="/redo")))
        times["jump"].append(timed(lambda: predict(client, 0, api_name="/jump")))
    return times


def report(title: str, times: dict[str, list[float]], scale: float = 1.0) -> None:
    print(f"\n{title}")
    print(f"   {'event':8} {'median':>9} {'max':>9} {'target':>9}  met")
    for name, values in times.items():
        if not values:
            print(f"   {name:8} {'n/a':>9}")
            continue
        target = TARGETS[name] * scale
        median = statistics.median(values)
        print(f"   {name:8} {1000 * median:8.0f}ms {1000 * max(values):8.0f}ms {1000 * target:8.0f}ms  "
              f"{'yes' if median <= target else 'NO'}")


def serve(demo) -> str:
    """Launch ``demo`` on a free loopback port; its URL."""
    from infincond.ui import launch_kwargs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.queue(default_concurrency_limit=8).launch(server_port=port, prevent_thread_lock=True, quiet=True,
                                                    **launch_kwargs())
    return f"http://127.0.0.1:{port}/"


def load(client: Client, preset) -> None:
    """/load with the preset's settings (an earlier version has no group column, and takes the heatmap's options)."""
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/load"]["parameters"]
    args = [preset.teacher, preset.dataset, preset.config_name or "", preset.split or "", preset.image_column,
            preset.label_column, preset.encoder, preset.corpus, preset.concepts_text, preset.samples,
            preset.group_column, None]
    if len(parameters) == 13:  # before the group column and without named parameters: the heatmap's options last
        args = [*args[:10], None, *N_OPTIONS]
    client.predict(*args, api_name="/load")


def shapes(args: argparse.Namespace) -> None:
    from infincond.demo import load_world
    from infincond.ui import build_app, shapes_preset

    world = load_world(args.world)
    preset = shapes_preset(world, args.samples)
    demo = build_app({"Shapes world (offline)": preset}, cache_dir=Path(tempfile.mkdtemp(prefix="bench-app-")))
    url = serve(demo)
    try:
        base = rss_mb()
        client = Client(url, verbose=False, download_files=DOWNLOAD[0])
        load_s = timed(lambda: load(client, preset))
        distil = timed(lambda: predict(client, 5, api_name="/distill"))
        print(f"\n1. Shapes world, {args.samples} train images: load {load_s:.1f} s (extraction included, first time), "
              f"distil {distil:.1f} s")
        report("   per event (round trip through gradio_client):", events(client, args.repeats, distil))
        one = rss_mb()

        def session(_: int) -> None:
            other = Client(url, verbose=False, download_files=DOWNLOAD[0])
            load(other, preset)
            predict(other, 5, api_name="/distill")
            predict(other, "Remove", 2.0, api_name="/apply")

        with ThreadPoolExecutor(7) as pool:
            list(pool.map(session, range(7)))
        eight = rss_mb()
        print(f"\n3. Memory (server process): {base:.0f} MiB before any session, {one:.0f} MiB with one session, "
              f"{eight:.0f} MiB with eight: {eight / one:.2f}x of one (target 1.5x)")
    finally:
        demo.close()


def synthetic(args: argparse.Namespace) -> None:
    from infincond.testing import planted_features
    from infincond.ui import build_app
    from infincond.ui.workspace import Workspace

    features = planted_features(n=50_000, k=800, c=10, nec=8, seed=0)

    def workspace() -> Workspace:
        ws = Workspace(cache_dir=tempfile.mkdtemp(prefix="bench-app-synthetic-"))
        ws.load_features(features)
        return ws

    demo = build_app(workspace=workspace)
    url = serve(demo)
    try:
        client = Client(url, verbose=False, download_files=DOWNLOAD[0])
        distil = timed(lambda: predict(client, 5, api_name="/distill"))
        report(f"2. Synthetic features, N = 50,000, K = 800, C = 10: distil {distil:.1f} s; per event (targets x2):",
               events(client, args.repeats, distil), scale=2.0)
    finally:
        demo.close()


def remote(args: argparse.Namespace) -> None:
    from infincond.demo import load_world
    from infincond.ui import shapes_preset

    preset = shapes_preset(load_world(args.world, build=False), args.samples)
    client = Client(args.url, verbose=False, download_files=DOWNLOAD[0])
    load_s = timed(lambda: load(client, preset))
    distil = timed(lambda: predict(client, 5, api_name="/distill"))
    print(f"\n1. The app at {args.url}, Shapes world, {args.samples} train images: load {load_s:.1f} s, "
          f"distil {distil:.1f} s")
    report("   per event (round trip through gradio_client):", events(client, args.repeats, distil))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=6000, help="Shapes world train images (6,000 = all).")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--world", default=None, help="A built Shapes world (default: the cached default world).")
    parser.add_argument("--url", default=None, help="Time an app already running there instead (parts 2, 3 skipped).")
    parser.add_argument("--parts", default="1,2", help="1: Shapes world and memory, 2: synthetic.")
    parser.add_argument(
        "--download",
        action="store_true",
        help="Fetch every returned file (images), as a browser does (the default times the events only).",
    )
    args = parser.parse_args()
    DOWNLOAD[0] = args.download
    print(f"threads: {threading.active_count()}, started {time.strftime('%H:%M:%S')}")
    if args.url:
        remote(args)
        return
    parts = {int(p) for p in args.parts.split(",")}
    if 1 in parts:
        shapes(args)
    if 2 in parts:
        synthetic(args)


if __name__ == "__main__":
    main()
