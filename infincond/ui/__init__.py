"""The Gradio app (no model code here: it calls the core). ``build_app`` builds the Blocks."""

from .app import CIFAR10, build_app, launch_kwargs, outputs_of, push_token
from .settings import LoadSettings
from .workspace import Workspace
from .world_job import WorldJob, shapes_preset

__all__ = ["CIFAR10", "LoadSettings", "Workspace", "WorldJob", "build_app", "launch_kwargs", "outputs_of", "push_token",
           "shapes_preset"]
