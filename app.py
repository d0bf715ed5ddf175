"""InFiConD app: `python app.py` serves the page at once and opens on the embedded Shapes world, building
it in the background on the first run (the page shows the build's stage, percentage and time left, and
enables Load when it is ready), with CIFAR-10 from the Hub as a second preset.
Options: --port, --host, --samples, --world.

On a Hugging Face Space (``SPACE_ID`` set) it listens on 0.0.0.0 and offers "Sign in with Hugging Face";
pushes then use the signed-in user's token. Locally they use ``HF_TOKEN``."""

from __future__ import annotations

import argparse
import os

from infincond.demo import load_world
from infincond.ui import WorldJob, build_app, launch_kwargs
from infincond.ui.world_job import SHAPES_SAMPLES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--samples", type=int, default=SHAPES_SAMPLES, help="images sampled from the Shapes world")
    parser.add_argument("--world", default=os.environ.get("INFINCOND_WORLD"),
                        help="a built Shapes world folder (default: the cached default world, built when missing)")
    args = parser.parse_args()
    if args.world:  # a world built elsewhere: only read, never built here
        world = WorldJob(samples=args.samples, load=lambda on_progress: load_world(args.world, build=False))
    else:
        world = WorldJob(samples=args.samples)
    demo = build_app(world=world)
    kwargs = launch_kwargs()
    kwargs.setdefault("server_name", args.host)
    demo.queue(default_concurrency_limit=8).launch(server_port=args.port, **kwargs)


if __name__ == "__main__":
    main()
