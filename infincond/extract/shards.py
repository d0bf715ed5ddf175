"""The sharded store of a run: results are written as they are computed, ``shard_size`` images per shard,
each shard atomically (a temporary name, fsync, rename), so a run killed at any moment resumes after its
last complete shard. When every shard is there they are assembled, shard by shard, into ``.npy`` files
(memory-mapped, never the whole array in RAM)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..storage import atomic_write, atomic_write_text

MANIFEST = "manifest.json"


def shard_ranges(n_images: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard over sample positions 0 .. n_images - 1."""
    return [(start, min(start + shard_size, n_images)) for start in range(0, n_images, shard_size)]


class ShardStore:
    """Shards ``shard-000000.npz`` ... under ``folder``, described by ``manifest.json``.

    A shard holds ``positions`` (n,) int64 of the images that decoded, one array per column with n rows,
    and ``failed_positions`` (f,) / ``failed_errors`` (f,) for the images that did not.
    """

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder = Path(folder)
        self.manifest = manifest

    @classmethod
    def open(cls, folder: str | os.PathLike, identity: dict, shard_size: int, create: bool) -> ShardStore:
        """The store for ``identity`` (what the shards are of). A store left by an interrupted run of the
        same identity is resumed with its own shard size; one of another identity is cleared.
        ``create``: this process sets the folder up (the main one); others only read the manifest."""
        folder = Path(folder)
        path = folder / MANIFEST
        if create:
            old = json.loads(path.read_text()) if path.exists() else None
            if old is None or old.get("identity") != identity:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True, exist_ok=True)
                manifest = {"identity": identity, "shard_size": int(shard_size)}
                atomic_write_text(path, json.dumps(manifest, indent=1))
        return cls(folder, json.loads(path.read_text()))

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    @property
    def n_images(self) -> int:
        return int(self.manifest["identity"]["n_images"])

    def ranges(self) -> list[tuple[int, int]]:
        return shard_ranges(self.n_images, self.shard_size)

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:06d}.npz"

    def done(self) -> set[int]:
        """Indices of the complete shards (a shard file exists only once it is whole)."""
        return {i for i in range(len(self.ranges())) if self.path(i).exists()}

    def write(self, index: int, arrays: dict[str, np.ndarray], failed: list[tuple[int, str]]) -> None:
        """Write shard ``index`` atomically: ``arrays`` (``positions`` and the columns) and the failures."""
        failed_positions = np.asarray([p for p, _ in failed], dtype=np.int64)
        failed_errors = np.asarray([e for _, e in failed], dtype=np.str_)
        atomic_write(self.path(index), lambda f: np.savez(f, **arrays, failed_positions=failed_positions,
                                                          failed_errors=failed_errors))

    def failures(self) -> list[tuple[int, str]]:
        """(position, error) of every image that could not be read, in position order."""
        out: list[tuple[int, str]] = []
        for index in range(len(self.ranges())):
            with np.load(self.path(index)) as shard:
                out += zip(shard["failed_positions"].tolist(), shard["failed_errors"].tolist(), strict=True)
        return sorted(out)

    def assemble(self, target: Path, columns: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> np.ndarray:
        """Write each column as ``target/<name>.npy`` (rows of every shard, in order), filled one shard at a
        time into a memory map; returns the positions (N',) int64 of the rows."""
        counts, positions = [], []
        for index in range(len(self.ranges())):
            with np.load(self.path(index)) as shard:
                positions.append(shard["positions"])
                counts.append(len(positions[-1]))
        total = int(sum(counts))
        outputs = {name: np.lib.format.open_memmap(target / f"{name}.npy", mode="w+", dtype=dtype,
                                                   shape=(total, *shape))
                   for name, (dtype, shape) in columns.items()}
        row = 0
        for index, count in enumerate(counts):
            with np.load(self.path(index)) as shard:
                for name, output in outputs.items():
                    output[row : row + count] = shard[name]
            row += count
        for output in outputs.values():
            output.flush()
        del outputs
        return np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
