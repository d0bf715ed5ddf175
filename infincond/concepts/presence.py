"""Region-level concept presence: a concept's score is its best cosine over the image's regions,
clipped at 0, and the region that gave it is kept for localisation."""

from __future__ import annotations

import torch

#: Region embeddings are kept in this precision, and presence is always computed from them rounded to it,
#: so that extraction, ``FeatureSet.with_concepts`` (on kept regions) and ``ConceptStudent`` agree exactly.
STORED_REGION_DTYPE = torch.float16


def stored_regions(region_embeddings: torch.Tensor) -> torch.Tensor:
    """Region embeddings (B, R, D) rounded to the precision they are kept in (float16)."""
    return region_embeddings.to(STORED_REGION_DTYPE)


def region_similarity(region_embeddings: torch.Tensor, concept_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine (B, K, R) float32 of every region of B images with K concepts (both L2-normalised)."""
    return torch.einsum("brd,kd->bkr", region_embeddings.float(),
                        concept_embeddings.to(region_embeddings.device).float())


@torch.inference_mode()
def concept_presence(region_embeddings: torch.Tensor,
                     concept_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Presence scores of K concepts in B images.

    region_embeddings: (B, R, D), L2-normalised. concept_embeddings: (K, D), L2-normalised.
    Returns ``scores`` (B, K) float32 in [0, 1] = max_r max(cos(region r, concept k), 0), and
    ``best_region`` (B, K) int64, the arg-max region (0 = whole image).
    """
    scores, best_region = region_similarity(region_embeddings, concept_embeddings).max(dim=-1)
    return scores.clamp_min_(0.0), best_region


@torch.inference_mode()
def presence_map(region_embeddings: torch.Tensor, concept_embedding: torch.Tensor) -> torch.Tensor:
    """A concept's presence in each region of B images (B, R) float32: max(cos, 0) region by region (the
    presence score is its maximum). region_embeddings (B, R, D), concept_embedding (D,), L2-normalised."""
    return region_similarity(region_embeddings, concept_embedding[None])[:, 0].clamp_min_(0.0)
