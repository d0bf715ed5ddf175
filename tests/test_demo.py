"""The embedded Shapes world: generator determinism, split statistics, and a reduced build whose three
repos load through the same code paths as Hub repo ids."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from infincond import ConceptEncoder, DataConfig, ImageSource, Teacher, run_distillation
from infincond.cli import main
from infincond.demo import (
    BUILD_STAGES,
    SHAPES,
    VOCABULARY,
    SceneConfig,
    WorldConfig,
    build_world,
    check_world,
    load_world,
)
from infincond.demo.biased_teacher import build_teacher, images_to_uint8, pixel_affine
from infincond.demo.dual_encoder import (
    EncoderTrainConfig,
    _caption_matches,
    _merge_buffers,
    _replicas,
    build_dual_encoder,
    patch_coverage,
)
from infincond.demo.parallel import Shards, split_evenly, sum_gradients
from infincond.demo.scenes import (
    BACKGROUNDS,
    caption,
    random_scenes,
    render,
    render_many,
    sample_split,
    shape_mask,
)
from infincond.errors import ConfigError


# -- generator ----------------------------------------------------------------------------------------
def test_same_seed_same_images_and_split():
    config = SceneConfig(split_sizes={"train": 40, "validation": 10, "test": 24})
    for split in ("train", "test"):
        first, second = sample_split(split, 40, config, seed=3), sample_split(split, 40, config, seed=3)
        assert first == second
        images_a, masks_a = render_many(first)
        images_b, masks_b = render_many(second)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images_a, images_b, strict=True))
        assert np.array_equal(masks_a, masks_b)
    other = sample_split("train", 40, config, seed=4)
    assert [s for s, _ in other] != [s for s, _ in sample_split("train", 40, config, seed=3)]
    # Splits draw from separate streams: the same seed does not repeat images across splits.
    assert {n for _, n in sample_split("train", 40, config, 3)}.isdisjoint(
        {n for _, n in sample_split("test", 40, config, 3)})


def test_biased_and_balanced_split_statistics():
    config = SceneConfig()
    train = [s for s, _ in sample_split("train", 6000, config, seed=0)]
    on_water = Counter(s.shape for s in train if s.background == config.spurious_background)
    per_class = Counter(s.shape for s in train)
    assert set(per_class.values()) == {1000}
    assert on_water[config.spurious_class] / per_class[config.spurious_class] >= 0.85
    for shape in SHAPES:
        if shape != config.spurious_class:
            assert on_water[shape] / per_class[shape] <= 0.06  # rare for every other class
    test = [s for s, _ in sample_split("test", 1200, config, seed=0)]
    cells = Counter((s.shape, s.background) for s in test)
    assert len(cells) == len(SHAPES) * len(BACKGROUNDS) and set(cells.values()) == {50}
    # The other attributes are independent of the class: roughly uniform within each class.
    colours = Counter((s.shape, s.colour) for s in train)
    assert min(colours.values()) > 1000 / 6 * 0.6


def test_render_ground_truth():
    scene, noise = random_scenes(1, SceneConfig(), seed=0)[0]
    image, mask = render(scene, noise)
    assert image.size == (64, 64) and image.mode == "RGB"
    ys, xs = np.nonzero(mask > 0.5)
    x0, y0, x1, y1 = scene.bbox
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    assert set(scene.attributes()) == {*VOCABULARY, "distractor"}
    with pytest.raises(ValueError, match="spurious_class"):
        SceneConfig(spurious_class="hexagon")


def test_shape_masks_are_cropped_exactly():
    # Drawn on the shape's box only; the same coverage as the whole canvas (circle and square: no
    # diagonal edges, so Pillow's rounding cannot differ), including shapes cut by the image's edge.
    from PIL import Image, ImageDraw

    for centre, radius in (((20.3, 31.7), 9.4), ((2.5, 60.2), 7.1), ((63.0, 0.5), 12.0)):
        for shape in ("circle", "square"):
            k = 4
            canvas = Image.new("L", (64 * k, 64 * k), 0)
            cx, cy, r = centre[0] * k, centre[1] * k, radius * k
            draw = ImageDraw.Draw(canvas)
            if shape == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
            else:
                h = 0.82 * r
                draw.polygon([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=255)
            full = np.asarray(canvas.resize((64, 64), Image.Resampling.BOX), dtype=np.float32) / 255.0
            assert np.array_equal(shape_mask(shape, centre, radius, 64), full)


def test_caption_matches_agree_with_ground_truth():
    rng = np.random.default_rng(0)
    scenes = [s for s, _ in random_scenes(30, SceneConfig(), seed=1)]
    named = [caption(s, rng)[1] for s in scenes]
    codes = torch.tensor([[VOCABULARY[f].index(s.attributes()[f]) for f in ("shape", "colour", "pattern", "size",
                                                                             "background")] + [int(s.rocks > 0)]
                          for s in scenes])
    expected = [[float(all(s.attributes()[f] == v for f, v in n.items())) for n in named] for s in scenes]
    assert _caption_matches(named, codes).tolist() == expected
    assert all(_caption_matches(named, codes).diagonal() == 1)


def test_patch_coverage():
    masks = np.zeros((1, 16, 16), np.float32)
    masks[0, :8, :4] = 1.0
    assert patch_coverage(masks, 8).tolist() == [[0.5, 0.0, 0.0, 0.0]]


def test_training_pixels_equal_processor_output():
    scenes = random_scenes(3, SceneConfig(), seed=0)
    images, _ = render_many(scenes)
    _, teacher_processor = build_teacher(64, WorldConfig.quick().teacher, seed=0)
    _, encoder_processor = build_dual_encoder(64, EncoderTrainConfig(), seed=0)
    for processor in (teacher_processor, encoder_processor.image_processor):
        scale, offset = pixel_affine(processor)
        ours = images_to_uint8(images).float() / 255.0 * scale + offset
        theirs = processor(images=images, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# -- building side by side ----------------------------------------------------------------------------
def test_shards_keep_order_and_sum_gradients_in_order():
    with Shards(3) as shards:
        assert shards.map(lambda k: k * 10) == [0, 10, 20]
        with pytest.raises(ZeroDivisionError):
            shards.map(lambda k: 1 // (k - 2))
    assert [len(range(12)[s]) for s in split_evenly(12, 5)] == [2, 3, 2, 3, 2]
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    sum_gradients([[torch.tensor([1.0, 2.0]), None], [torch.tensor([0.5, 0.5]), None]], [a, b])
    assert a.grad.tolist() == [1.5, 2.5] and b.grad is None


def test_tower_replicas_share_parameters_and_merge_statistics():
    model, _ = build_dual_encoder(64, WorldConfig.quick().encoder, seed=0)
    towers = _replicas(model.vision_model, 2)
    assert all(p is q for p, q in zip(towers[0].parameters(), towers[1].parameters(), strict=True))
    bn = [m for m in towers[0].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn_copy = [m for m in towers[1].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn.running_mean.fill_(1.0)
    bn_copy.running_mean.fill_(3.0)
    _merge_buffers(towers)
    assert torch.all(bn.running_mean == 2.0)


def test_training_forward_passes_draw_nothing_from_the_global_generator():
    # What lets the shards run side by side and still give the same world: no dropout anywhere.
    model, processor = build_dual_encoder(64, WorldConfig.quick().encoder, seed=0)
    model.train()
    state = torch.random.get_rng_state()
    model.get_text_features(**processor.tokenizer(["a photo of a red circle."], return_tensors="pt"))
    model.vision_model(pixel_values=torch.zeros(2, 3, 64, 64))
    teacher, _ = build_teacher(64, WorldConfig.quick().teacher, seed=0)
    state = torch.random.get_rng_state()
    teacher.train()(pixel_values=torch.zeros(2, 3, 64, 64))
    assert torch.equal(state, torch.random.get_rng_state())


def _digest(folder) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.suffix in (".safetensors", ".parquet")}


def test_build_progress_and_determinism(world, tmp_path):
    events = []
    rebuilt = build_world(WorldConfig.quick(), tmp_path / "shapes", progress=False,
                          on_progress=lambda *event: events.append(event))
    fractions = [fraction for _, fraction, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions.count(1.0) == 1
    assert {stage for stage, _, _ in events} == set(BUILD_STAGES) and events[-1][0] == "saving"
    assert all(left is None or left >= 0 for _, _, left in events) and events[-1][2] == 0.0
    assert any(left is not None for _, _, left in events[:-1])
    # Same config and seed, built again with other timings on the threads: the same world, byte for byte.
    assert _digest(rebuilt.root) == _digest(world.root) and len(_digest(world.root)) == 5
    # An existing world is reused and reported done at once.
    again = []
    build_world(WorldConfig.quick(), rebuilt.root, progress=False, on_progress=lambda *event: again.append(event))
    assert again == [("saving", 1.0, 0.0)]


def test_failing_progress_callback_stops_the_build(tmp_path):
    def stop(stage, fraction, seconds_left):
        if stage == "image tower":
            raise KeyboardInterrupt  # what a page's cancel button may raise

    with pytest.raises(KeyboardInterrupt):
        build_world(WorldConfig.quick(), tmp_path / "shapes", progress=False, on_progress=stop)
    assert not (tmp_path / "shapes").exists() and not (tmp_path / "shapes.partial").exists()


# -- the built world ----------------------------------------------------------------------------------
def test_world_repos_load_like_hub_repos(world):
    manifest = json.loads((world.root / "world.json").read_text())
    assert manifest["fingerprint"] == WorldConfig.quick().fingerprint
    sizes = WorldConfig.quick().scenes.split_sizes
    for split, n in sizes.items():
        source = ImageSource.load(DataConfig(world.dataset, split=split, samples=None))
        assert (source.image_column, source.label_column) == ("image", "label")
        assert source.label_names == list(SHAPES) and len(source) == n
        assert {"colour", "pattern", "size", "background", "rocks", "bbox"} <= set(source.dataset.column_names)
    readme = (world.root / "dataset" / "README.md").read_text()
    assert readme.startswith("---\n") and "split: test" in readme
    teacher = Teacher.from_pretrained(world.teacher, dataset_label_names=list(SHAPES), device="cpu")
    assert teacher.class_names == list(SHAPES)
    encoder = ConceptEncoder.from_pretrained(world.encoder, device="cpu")
    assert encoder.family == "align" and encoder.region_mode == "dense"
    images = ImageSource.load(DataConfig(world.dataset, split="test", samples=4)).images([0, 1])
    assert teacher.logits(images).shape == (2, len(SHAPES))
    regions = encoder.encode_regions(images)
    assert regions.embeddings.shape[:2] == (2, 65) and regions.boxes.shape == (65, 4)
    assert set(world.concepts) >= {"circle", "water", "striped", "rock"}


def test_load_world_reuses_and_builds_when_missing(world, tmp_path):
    again = load_world(world.root, build=False)
    assert again.manifest == world.manifest and again.config == world.config
    assert build_world(WorldConfig.quick(), world.root, progress=False).manifest == world.manifest  # reused
    with pytest.raises(ConfigError, match="demo build"):
        load_world(tmp_path / "none", build=False)
    assert not (tmp_path / "none").exists()


def test_check_world_measures_everything(world):
    report = check_world(world, n_images=32, distill_samples=120, progress=False)
    assert set(report.zero_shot) == {"shape", "colour", "pattern", "background", "size"}
    assert all(0.0 <= v <= 1.0 for v in [*report.zero_shot.values(), report.localisation])
    expected_gap = report.teacher_accuracy["validation"]["circle"] - report.teacher_accuracy["test"]["circle"]
    assert report.teacher_gap == pytest.approx(expected_gap)
    assert report.distillation["nec_max"] <= 10 and 0.0 <= report.distillation["fidelity"] <= 1.0
    assert json.loads((world.root / "check.json").read_text())["teacher_gap"] == pytest.approx(report.teacher_gap)
    assert "gap on 'circle'" in report.format() and "Criteria:" in report.format()


def test_distil_the_world_with_its_vocabulary(world):
    run = run_distillation(world.teacher, DataConfig(world.dataset, split="train", samples=100), world.encoder,
                           world.concepts, cache_dir=False, device="cpu", progress=False)
    assert run.features.concepts == world.concepts and run.features.class_names == list(SHAPES)


def test_cli_demo(world, capsys):
    assert main(["demo", "path", "--root", str(world.root)]) == 0
    assert str(world.root) in capsys.readouterr().out
    assert main(["demo", "build", "--quick", "--root", str(world.root)]) == 0
    assert "teacher" in capsys.readouterr().out
    code = main(["demo", "check", "--quick", "--root", str(world.root), "--images", "16", "--samples", "0"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "zero-shot shape" in out and "Distilled" not in out
