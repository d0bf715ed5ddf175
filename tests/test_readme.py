"""The README's Python examples run as written, in order, on the reduced Shapes world and the local Hub:
only the names that point outside this machine (Hub repo ids, a photo on the reader's disk, the default
world that takes minutes to build) are swapped for local ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import infincond
from infincond import ConceptStudent, DataConfig, ImageSource

README = Path(__file__).resolve().parents[1] / "README.md"
ALICE = "hf_alice_write_token"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_python_examples_run(world, hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", ALICE)
    images = ImageSource.load(DataConfig(world.dataset, split="test", samples=4)).images(range(4))
    images[0].save(tmp_path / "cat.jpg")
    swaps = {
        "load_world()": f"load_world({str(world.root)!r})",
        '"teacher-repo-or-path"': repr(world.teacher),
        '"dataset-or-path", samples=2000': f'{world.dataset!r}, split="train", samples=200',
        '"openai/clip-vit-base-patch32"': repr(world.encoder),
        "your-name/": "alice/",
    }
    blocks = python_blocks()
    assert len(blocks) >= 4
    namespace = {"infincond": infincond, "images": images, "Image": Image}
    for number, block in enumerate(blocks):
        code = block
        for old, new in swaps.items():
            code = code.replace(old, new)
        if "alice/my-student" in code:  # the Share section's example: the student was pushed first
            ConceptStudent.from_pretrained("my-student").push_to_hub("alice/my-student", token=ALICE)
        try:
            exec(compile(code, f"README.md python block {number + 1}", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message names the block
            pytest.fail(f"README python block {number + 1} failed: {type(error).__name__}: {error}\n{code}")
    assert (tmp_path / "my-student" / "model.safetensors").is_file()
    assert (tmp_path / "tuned-student" / "tuning_log.json").is_file()
    assert namespace["again"].replay_gap <= 1e-6
