"""Concepts: the text corpus, the dual encoder that embeds it, and region-level presence scores."""

from .corpus import ConceptCorpus
from .encoder import ConceptEncoder, RegionEmbeddings
from .presence import concept_presence

__all__ = ["ConceptCorpus", "ConceptEncoder", "RegionEmbeddings", "concept_presence"]
