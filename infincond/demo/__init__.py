"""The embedded offline "Shapes" world: a generated dataset with a planted spurious correlation, a small
dual encoder and a biased teacher, as local Hugging Face-format repos built on demand.

Example::

    from infincond.demo import load_world
    world = load_world()          # builds it into the cache the first time (about 3 minutes on 2 CPU cores)
    run = infincond.run_distillation(world.teacher, world.dataset, world.encoder, world.concepts)
"""

from .progress import BUILD_STAGES, ProgressCallback
from .quality import THRESHOLDS, WorldReport, check_world
from .scenes import SHAPES, VOCABULARY, Scene, SceneConfig, render, sample_split, vocabulary_concepts
from .world import World, WorldConfig, build_world, default_world_root, load_world

__all__ = [
    "BUILD_STAGES",
    "SHAPES",
    "VOCABULARY",
    "ProgressCallback",
    "Scene",
    "SceneConfig",
    "THRESHOLDS",
    "World",
    "WorldConfig",
    "WorldReport",
    "build_world",
    "check_world",
    "default_world_root",
    "load_world",
    "render",
    "sample_split",
    "vocabulary_concepts",
]
