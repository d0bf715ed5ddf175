"""The sharded store of a run. Every per-image column is one ``.npy`` file of the whole sample, created
empty (sparse) when the run starts; each batch's rows are written straight to their place, from a writer
thread, so an image's results are written once: assembling the features renames the files (it copies rows
only to leave out images that could not be read). A shard of ``shard_size`` images is complete when its
record ``shard-000000.npz`` exists, written atomically after its rows are on disk (fdatasync), so a run
killed at any moment resumes after its last complete shard."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import StorageError
from ..storage import atomic_write, atomic_write_text, storage_errors, write_fully

MANIFEST = "manifest.json"
#: How the store lays its files out (a store of another layout is not resumed).
LAYOUT = 2

Columns = dict[str, tuple[np.dtype, tuple[int, ...]]]


def shard_ranges(n_images: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard over sample positions 0 .. n_images - 1."""
    return [(start, min(start + shard_size, n_images)) for start in range(0, n_images, shard_size)]


def _row_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of one row of a column of ``dtype`` whose rows have ``shape``."""
    return np.dtype(dtype).itemsize * int(np.prod(shape))


def _runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """[begin, end) index ranges of ``positions`` (sorted) that are consecutive numbers."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    bounds = [0, *breaks.tolist(), len(positions)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class ShardStore:
    """Column files ``<name>.npy`` (one row per sample position) and shard records ``shard-000000.npz``
    under ``folder``, described by ``manifest.json``.

    A record holds ``positions`` (n,) int64 of the shard's images that decoded (their rows are written) and
    ``failed_positions`` (f,) / ``failed_errors`` (f,) for the images that did not.
    """

    def __init__(self, folder: Path, manifest: dict, columns: Columns) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.columns = columns
        self._files: dict[str, tuple[int, int, int]] = {}  # name: (fd, offset of row 0, bytes per row)

    @classmethod
    def open(cls, folder: str | os.PathLike, identity: dict, shard_size: int, columns: Columns,
             create: bool) -> ShardStore:
        """The store for ``identity`` (what the shards are of). A store left by an interrupted run of the
        same identity is resumed with its own shard size; one of another identity or layout is cleared.
        ``create``: this process sets the folder up (the main one); others only read the manifest."""
        folder = Path(folder)
        path = folder / MANIFEST
        identity = {**identity, "layout": LAYOUT}
        if create:
            with storage_errors("set up the extraction's shards", folder):
                old = json.loads(path.read_text()) if path.exists() else None
                if old is None or old.get("identity") != identity:
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir(parents=True, exist_ok=True)
                    n = int(identity["n_images"])
                    for name, (dtype, shape) in columns.items():  # sparse: no row takes disk space yet
                        np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=(n, *shape))
                    manifest = {"identity": identity, "shard_size": int(shard_size)}
                    atomic_write_text(path, json.dumps(manifest, indent=1))
        return cls(folder, json.loads(path.read_text()), columns)

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
        """Indices of the complete shards (a record exists only once its rows are on disk)."""
        return {i for i in range(len(self.ranges())) if self.path(i).exists()}

    def bytes_needed(self, shards: list[int]) -> int:
        """Disk space the rows of ``shards`` take."""
        ranges = self.ranges()
        row = sum(_row_bytes(dtype, shape) for dtype, shape in self.columns.values())
        return row * sum(ranges[i][1] - ranges[i][0] for i in shards)

    def check_space(self, shards: list[int]) -> None:
        """Refuse to start a run whose rows the disk cannot hold (the column files are sparse until written)."""
        needed, free = self.bytes_needed(shards), shutil.disk_usage(self.folder).free
        if needed > free:
            def size(n: int) -> str:
                return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.2f} MB"

            raise StorageError(f"The features need {size(needed)} more in {str(self.folder)!r} and that disk has "
                               f"{size(free)} free: free some space, or choose a cache folder on another disk "
                               "(cache_dir=..., CLI: --cache-dir). Shards already written are kept.")

    def _file(self, name: str) -> tuple[int, int, int]:
        if name not in self._files:
            path = self.folder / f"{name}.npy"
            with open(path, "rb") as handle:
                np.lib.format.read_magic(handle)
                np.lib.format.read_array_header_1_0(handle)
                offset = handle.tell()
            self._files[name] = (os.open(path, os.O_RDWR), offset, _row_bytes(*self.columns[name]))
        return self._files[name]

    def write_rows(self, positions: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Write the rows of ``positions`` (sorted) of every column, each to its place in the column's file."""
        runs = _runs(positions)
        with storage_errors("write the extracted features", self.folder):
            for name, array in arrays.items():
                fd, offset, row_bytes = self._file(name)
                for begin, end in runs:
                    write_fully(fd, np.ascontiguousarray(array[begin:end]), offset + int(positions[begin]) * row_bytes)

    def seal(self, index: int, positions: np.ndarray, failed: list[tuple[int, str]]) -> None:
        """Mark shard ``index`` complete: its rows (already written) to disk, then its record, atomically."""
        with storage_errors("write the extracted features", self.folder):
            for name in self.columns:
                os.fdatasync(self._file(name)[0])
        failed_positions = np.asarray([p for p, _ in failed], dtype=np.int64)
        failed_errors = np.asarray([e for _, e in failed], dtype=np.str_)
        atomic_write(self.path(index), lambda f: np.savez(f, positions=np.asarray(positions, dtype=np.int64),
                                                          failed_positions=failed_positions,
                                                          failed_errors=failed_errors))

    def close(self) -> None:
        for fd, _, _ in self._files.values():
            os.close(fd)
        self._files.clear()

    def failures(self) -> list[tuple[int, str]]:
        """(position, error) of every image that could not be read, in position order."""
        out: list[tuple[int, str]] = []
        for index in range(len(self.ranges())):
            with np.load(self.path(index)) as shard:
                out += zip(shard["failed_positions"].tolist(), shard["failed_errors"].tolist(), strict=True)
        return sorted(out)

    def assemble(self, target: Path) -> np.ndarray:
        """Move each column to ``target/<name>.npy``: renamed when every image was read, else its rows of the
        images that were read copied out, a shard at a time. Returns the positions (N',) int64 of the rows."""
        self.close()
        positions = []
        for index in range(len(self.ranges())):
            with np.load(self.path(index)) as shard:
                positions.append(shard["positions"])
        kept = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        with storage_errors("assemble the extracted features", target):
            for name, (dtype, shape) in self.columns.items():
                source = self.folder / f"{name}.npy"
                if len(kept) == self.n_images:  # every image read: the rows are in place
                    os.replace(source, target / f"{name}.npy")
                    continue
                rows = np.load(source, mmap_mode="r")
                output = np.lib.format.open_memmap(target / f"{name}.npy", mode="w+", dtype=dtype,
                                                   shape=(len(kept), *shape))
                row = 0
                for part in positions:
                    output[row : row + len(part)] = rows[part]
                    row += len(part)
                output.flush()
                del output, rows
        return kept

