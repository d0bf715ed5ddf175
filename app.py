"""InFiConD app: `python app.py` opens on the embedded Shapes world (built on first run, with a progress
bar), with CIFAR-10 from the Hub as a second preset. Options: --port, --host, --samples, --world.

On a Hugging Face Space (``SPACE_ID`` set) it listens on 0.0.0.0 and offers "Sign in with Hugging Face";
pushes then use the signed-in user's token. Locally they use ``HF_TOKEN``."""

from __future__ import annotations

import argparse
import os

from infincond.demo import load_world
from infincond.ui import build_app, launch_kwargs, shapes_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--samples", type=int, default=600, help="images sampled from the Shapes world")
    parser.add_argument("--world", default=os.environ.get("INFINCOND_WORLD"),
                        help="a built Shapes world folder (default: the cached default world, built when missing)")
    args = parser.parse_args()
    # Builds the default world once (about 5 minutes on 2 CPU cores), then reuses it.
    world = load_world(args.world, build=args.world is None)
    demo = build_app({"Shapes world (offline)": shapes_preset(world, args.samples)})
    kwargs = launch_kwargs()
    kwargs.setdefault("server_name", args.host)
    demo.queue().launch(server_port=args.port, **kwargs)


if __name__ == "__main__":
    main()
