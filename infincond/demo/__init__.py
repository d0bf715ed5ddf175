"""The embedded offline "Shapes" world: a generated dataset with a planted spurious correlation, a small
dual encoder and a biased teacher, as local Hugging Face-format repos built on demand.

Example::

    from infincond.demo import load_world
    world = load_world()          # builds it into the cache the first time (a few minutes on a CPU)
    run = infincond.run_distillation(world.teacher, world.dataset, world.encoder, world.concepts)
"""

from .scenes import SHAPES, VOCABULARY, Scene, SceneConfig, render, sample_split, vocabulary_concepts
from .world import World, WorldConfig, WorldReport, build_world, check_world, default_world_root, load_world

__all__ = [
    "SHAPES", "VOCABULARY", "Scene", "SceneConfig", "World", "WorldConfig", "WorldReport", "build_world",
    "check_world", "default_world_root", "load_world", "render", "sample_split", "vocabulary_concepts",
]
