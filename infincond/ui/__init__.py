"""The Gradio app (no model code here: it calls the core). ``build_app`` builds the Blocks."""

from .app import CIFAR10, build_app, launch_kwargs, push_token, shapes_preset
from .workspace import LoadSettings, Workspace

__all__ = ["CIFAR10", "LoadSettings", "Workspace", "build_app", "launch_kwargs", "push_token", "shapes_preset"]
