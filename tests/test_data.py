import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from infincond import ColumnDetectionError, DataConfig, ImageSource
from infincond.data import detect_columns, to_rgb
from infincond.testing import make_shapes_dataset


def test_columns_detected_from_features():
    ds = make_shapes_dataset(4)
    assert detect_columns(ds.features) == ("image", "label")
    assert detect_columns(ds.features, label_column="none") == ("image", None)
    assert detect_columns(ds.features, image_column="image", label_column="shape") == ("image", "shape")


def test_clear_errors_without_image_or_label_column():
    no_image = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    with pytest.raises(ColumnDetectionError, match="No image column.*--image-column"):
        detect_columns(no_image)
    no_label = Features({"picture": ImageFeature(), "caption": Value("string")})
    with pytest.raises(ColumnDetectionError, match="No label column.*label_column='none'"):
        detect_columns(no_label)
    with pytest.raises(ColumnDetectionError, match="'nope' is not in"):
        detect_columns(no_label, label_column="nope")


def test_string_labels_become_class_ids(tmp_path):
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(6)]
    ds = Dataset.from_dict({"img": images, "category": ["b", "a", "c", "a", "b", "c"]},
                           features=Features({"img": ImageFeature(), "category": Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    source = ImageSource.load(DataConfig(str(tmp_path / "ds"), samples=None))
    assert source.image_column == "img" and source.label_column == "category"
    assert source.label_names == ["a", "b", "c"]
    assert source.labels.tolist() == [1, 0, 2, 0, 1, 2]


def test_sample_and_split_are_fixed_by_seed(repos):
    a = ImageSource.load(DataConfig(repos["dataset"], samples=50, seed=3, val_fraction=0.2))
    b = ImageSource.load(DataConfig(repos["dataset"], samples=50, seed=3, val_fraction=0.2))
    c = ImageSource.load(DataConfig(repos["dataset"], samples=50, seed=4, val_fraction=0.2))
    assert np.array_equal(a.image_ids, b.image_ids) and np.array_equal(a.is_val, b.is_val)
    assert not np.array_equal(a.image_ids, c.image_ids)
    assert len(a) == 50 and a.is_val.sum() == 10 and len(set(a.image_ids.tolist())) == 50
    full = ImageSource.load(DataConfig(repos["dataset"], samples=None))
    assert len(full) == 120


def test_imagefolder_and_data_file_load(tmp_path):
    for name, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10, 10), colour).save(tmp_path / "folder" / name / f"{i}.png")
    source = ImageSource.load(DataConfig(str(tmp_path / "folder"), samples=None))
    assert source.label_names == ["cat", "dog"] and len(source) == 6
    assert sorted(source.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    parquet = tmp_path / "data.parquet"
    make_shapes_dataset(8).to_parquet(str(parquet))
    from_file = ImageSource.load(DataConfig(str(parquet), samples=None))
    assert len(from_file) == 8 and from_file.image_column == "image"
    assert from_file.images([0])[0].mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "CMYK"])
def test_images_become_rgb(mode):
    base = Image.new("RGB", (6, 4), (10, 120, 250))
    image = base.convert("I;16") if mode == "I;16" else base.convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (6, 4)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 255, 255))
    assert list(to_rgb(image).getdata()) == [(255, 255, 255), (0, 0, 255)]


def test_local_dataset_rebuilt_in_place_is_not_served_stale(tmp_path):
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"
    (folder / "README.md").write_text(card)
    for n in (12, 20):  # the same folder and declared configs, new files
        make_shapes_dataset(n).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
        assert len(ImageSource.load(DataConfig(str(folder), samples=None))) == n


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("I;16", np.full((4, 4), 81 * 257, dtype=np.uint16), 81),  # a 16-bit PNG's mean grey of 81 stays 81
    ("I", np.full((4, 4), 100, dtype=np.int32), 100),  # integers that fit in 8 bits are read as 8-bit
    ("I", np.full((4, 4), 40000, dtype=np.int32), round(40000 / 257)),  # ... in 16 bits as 16-bit
    ("F", np.full((4, 4), 0.5, dtype=np.float32), 128),  # floats in [0, 1] as a share of white
])
def test_grey_images_keep_their_brightness_by_bit_depth(tmp_path, mode, values, expected):
    image = Image.fromarray(values)
    if mode == "I;16":  # as a 16-bit PNG reads back
        image.save(tmp_path / "grey.png")
        image = Image.open(tmp_path / "grey.png")
    assert image.mode == mode
    pixels = np.asarray(to_rgb(image))
    assert pixels.shape == (4, 4, 3) and (pixels == expected).all()
