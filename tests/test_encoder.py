import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infincond import ConceptEncoder, ConfigError, LoadError, concept_presence
from infincond.regions import box_on_image


def test_whole_image_region_is_the_image_embedding(encoder, source):
    images = source.images([0, 1, 2])
    regions = encoder.encode_regions(images)
    side = 32 // 8
    assert regions.embeddings.shape == (3, 1 + side * side, encoder.embed_dim)
    assert regions.boxes.shape == (1 + side * side, 4)
    with torch.inference_mode():
        pooled = encoder.model.get_image_features(pixel_values=encoder.pixel_values(images)).pooler_output
    torch.testing.assert_close(regions.embeddings[:, 0], F.normalize(pooled, dim=-1))
    torch.testing.assert_close(regions.embeddings.norm(dim=-1), torch.ones(3, 1 + side * side))


def test_dense_patches_follow_the_maskclip_value_path(encoder, source):
    """MaskCLIP's definition, computed by the model itself: the last block run with each token attending to
    itself only (an additive mask of -inf off the diagonal), its patch tokens then mapped as CLIP maps its
    class token (post-layernorm, visual projection). Nothing of the code under test is retyped."""
    images = source.images([5])
    pixel_values = encoder.pixel_values(images)
    vision = encoder.model.vision_model
    with torch.inference_mode():
        hidden = vision(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-2]
        tokens = hidden.shape[1]
        self_only = torch.full((tokens, tokens), float("-inf")).fill_diagonal_(0.0)[None, None]
        out = vision.encoder.layers[-1](hidden, attention_mask=self_only)
        out = out[0] if isinstance(out, tuple) else out
        expected = F.normalize(encoder.model.visual_projection(vision.post_layernorm(out[:, 1:])), dim=-1)
    torch.testing.assert_close(encoder.encode_regions(images).embeddings[:, 1:], expected)


def test_grid_and_whole_modes(repos, source):
    grid = ConceptEncoder.from_pretrained(repos["clip"], region_mode="grid", grid_size=2, device="cpu")
    regions = grid.encode_regions(source.images([0, 1]))
    assert regions.embeddings.shape[:2] == (2, 5)
    np.testing.assert_allclose(regions.boxes[1:], [[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1]])
    whole = ConceptEncoder.from_pretrained(repos["clip"], region_mode="whole", device="cpu")
    assert whole.encode_regions(source.images([0])).embeddings.shape[:2] == (1, 1)
    with pytest.raises(ConfigError, match="region_mode"):
        ConceptEncoder.from_pretrained(repos["clip"], region_mode="segments")


def test_presence_is_max_over_regions_clipped_at_zero():
    gen = torch.Generator().manual_seed(0)
    regions = F.normalize(torch.randn(4, 7, 8, generator=gen).abs(), dim=-1)  # positive orthant
    concepts = F.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    concepts[4] = -F.normalize(torch.rand(8, generator=gen) + 0.1, dim=0)  # opposes every region
    scores, best = concept_presence(regions, concepts)
    sims = np.einsum("brd,kd->bkr", regions.numpy(), concepts.numpy())
    np.testing.assert_allclose(scores.numpy(), np.maximum(sims.max(-1), 0), atol=1e-6)
    assert np.array_equal(best.numpy(), sims.argmax(-1))
    assert (scores >= 0).all() and (scores[:, 4] == 0).all()


def test_text_embeddings_and_vision_only(repos, encoder, source):
    text = encoder.encode_text(["a photo of red.", "a photo of blue."])
    assert text.shape == (2, encoder.embed_dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    vision_only = ConceptEncoder.from_pretrained(repos["clip"], vision_only=True, device="cpu")
    assert vision_only.model.text_model is None
    with pytest.raises(ConfigError, match="vision-only"):
        vision_only.encode_text(["red"])
    images = source.images([3])
    torch.testing.assert_close(vision_only.encode_regions(images).embeddings, encoder.encode_regions(images).embeddings)


def test_not_a_dual_encoder_is_a_clear_error(repos):
    with pytest.raises(LoadError):
        ConceptEncoder.from_pretrained(repos["teacher"])
    with pytest.raises(LoadError, match="concept encoder path .* does not exist"):
        ConceptEncoder.from_pretrained(str(repos["root"] / "does-not-exist"))


def test_box_on_image_maps_the_centre_crop():
    assert box_on_image(np.array([0, 0, 1, 1]), (200, 100)) == (50.0, 0.0, 150.0, 100.0)
    assert box_on_image(np.array([0.5, 0.5, 1, 1]), (100, 100)) == (50.0, 50.0, 100.0, 100.0)


def test_siglip_dense_regions_go_through_the_pooling_head(tmp_path, source):
    from infincond.testing import build_tiny_siglip

    path = build_tiny_siglip(tmp_path / "siglip", ["red", "blue"])
    encoder = ConceptEncoder.from_pretrained(str(path), device="cpu")
    assert encoder.family == "siglip" and encoder.region_mode == "dense"
    images = source.images([0, 1])
    regions = encoder.encode_regions(images).embeddings
    assert regions.shape == (2, 1 + 16, encoder.embed_dim)
    vision = encoder.model.vision_model
    with torch.inference_mode():
        out = vision(pixel_values=encoder.pixel_values(images))
        torch.testing.assert_close(regions[:, 0], F.normalize(out.pooler_output, dim=-1))
        # A head fed one patch token alone pools to exactly that token's dense embedding.
        single = vision.head(out.last_hidden_state[:, 3:4])
    torch.testing.assert_close(regions[:, 1 + 3], F.normalize(single, dim=-1), rtol=1e-4, atol=1e-5)
    assert encoder.encode_text(["a photo of red."]).shape == (1, encoder.embed_dim)


def test_align_cells_are_regions_whose_mean_is_the_image_embedding(tmp_path, source):
    from infincond.demo.dual_encoder import EncoderTrainConfig, build_dual_encoder

    model, processor = build_dual_encoder(32, EncoderTrainConfig(width=0.25, text_hidden=32, text_layers=1), seed=0)
    model.save_pretrained(tmp_path / "align")
    processor.save_pretrained(tmp_path / "align")
    encoder = ConceptEncoder.from_pretrained(str(tmp_path / "align"), device="cpu")
    assert encoder.family == "align" and encoder.region_mode == "dense"
    images = source.images([0, 1])
    regions = encoder.encode_regions(images)
    assert regions.embeddings.shape == (2, 1 + 16, encoder.embed_dim) and regions.boxes.shape == (17, 4)
    with torch.inference_mode():
        out = encoder.model.vision_model(pixel_values=encoder.pixel_values(images))
    cells = out.last_hidden_state.flatten(2).transpose(1, 2)
    torch.testing.assert_close(regions.embeddings[:, 0], F.normalize(cells.mean(1), dim=-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(regions.embeddings[:, 1:], F.normalize(cells, dim=-1))
    torch.testing.assert_close(regions.embeddings[:, 0], encoder.encode_images(images))
    # Unknown words are spelled out, so two unseen concepts still get different embeddings.
    text = encoder.encode_text(["a photo of zebra.", "a photo of okapi."])
    assert not torch.allclose(text[0], text[1])
