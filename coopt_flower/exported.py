"""Read any optimized dataset as a torch ``Dataset`` of ``(image, target)``.

:func:`open_dataset` takes a round directory (:mod:`coopt_flower.dataset_format`) or an
export (:mod:`coopt_flower.export`: ``hf`` or ``webdataset``) and returns items like
:class:`~coopt_flower.dataset_format.OptimizedDataset`: ``image`` a ``torch.uint8`` tensor
``(3, H, W)``, ``target`` a ``torch.float32`` tensor ``(n,)``, in the same row order. So the
training CLI (``coopt train``) trains on an export directly.

Random access without loading everything: an ``hf`` export is memory-mapped Arrow; a
``webdataset`` export is indexed once from its tar headers (offsets only) and each item is
read with one seek. Both expose ``targets``, a lazy ``(N, n)`` view that reads slices on
demand, so :func:`coopt_flower.target_statistics.target_stats` never decodes an image.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from coopt_flower.dataset_format import MANIFEST_FILE, DatasetIntegrityError, load_optimized_dataset, sha256_file
from coopt_flower.export import ARROW_DIR, EXPORT_INFO_FILE, TARGET_EXTENSION


def dataset_kind(path: str | os.PathLike) -> str:
    """``"round"``, ``"hf"`` or ``"webdataset"``; a clear error for anything else."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return "round"
    if (path / EXPORT_INFO_FILE).is_file():
        return json.loads((path / EXPORT_INFO_FILE).read_text(encoding="utf-8"))["format"]
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return "hf"
    if any(path.glob("*.tar")):
        return "webdataset"
    raise DatasetIntegrityError(f"{path} is neither a CoOpt round directory ({MANIFEST_FILE}) nor "
                                f"an export ({EXPORT_INFO_FILE}); pass the folder that holds them")


def export_file(root: Path, name: str) -> Path:
    """The file ``name`` of an export, refused unless it lies inside it: a relative path without
    ``..``, no link on the way (an export is shared, untrusted input)."""
    parts = Path(str(name)).parts
    if not isinstance(name, str) or not parts or Path(name).is_absolute() or ".." in parts:
        raise DatasetIntegrityError(f"{root}: {EXPORT_INFO_FILE} names {name!r}, which is not a path "
                                    "inside the export; refusing to read it")
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise DatasetIntegrityError(f"{root}: {name} goes through a link; refusing to read it")
    return path


def verify_export(path: str | os.PathLike) -> dict[str, Any]:
    """Check every exported file's sha256 against ``coopt_export.json``; returns that info."""
    path = Path(path)
    info = json.loads((path / EXPORT_INFO_FILE).read_text(encoding="utf-8"))
    for name, digest in info["files"].items():
        file = export_file(path, name)
        if not file.is_file():
            raise DatasetIntegrityError(f"{file} is missing from the export")
        if sha256_file(file) != digest:
            raise DatasetIntegrityError(f"{path / name} is corrupted: its sha256 does not match "
                                        f"{EXPORT_INFO_FILE}")
    return info


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


class _TorchItems:
    """``__getitem__`` -> (uint8 (3, H, W), float32 (n,)) from ``pixels(i)`` and ``target(i)``."""

    transform: Callable | None = None

    def __getitem__(self, index: int):
        import torch

        image = torch.from_numpy(np.array(self.pixels(int(index))))  # copy: decoded arrays may be read-only
        image = image.permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(np.array(self.targets[int(index)], dtype=np.float32))


class _LazyTargets:
    """An ``(N, n)`` array-like whose rows are read on demand (``read(start, stop)``)."""

    ndim = 2

    def __init__(self, length: int, dim: int, read: Callable[[int, int], np.ndarray]) -> None:
        self.shape = (length, dim)
        self._read = read

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            rows = self._read(start, stop) if stop > start else np.zeros((0, self.shape[1]), np.float32)
            return rows[::step]
        index = int(key) + (len(self) if int(key) < 0 else 0)
        return self._read(index, index + 1)[0]


class HFExportDataset(_TorchItems):
    """An ``hf`` export as ``(image, target)`` items, read from its memory-mapped Arrow copy
    (``arrow/``; the top level for exports written before the Parquet layout)."""

    def __init__(self, path: str | os.PathLike, transform: Callable | None = None) -> None:
        import datasets

        self.path = Path(path)
        arrow = self.path / ARROW_DIR if (self.path / ARROW_DIR).is_dir() else self.path
        self.table = datasets.load_from_disk(str(arrow)).with_format("numpy")
        self.sample_ids = self.table["sample_id"]
        self.transform = transform
        dim = self.table.features["target"].length
        self.targets = _LazyTargets(len(self.table), dim, self._read_targets)

    def _read_targets(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.table.select_columns(["target"])[start:stop]["target"])

    def __len__(self) -> int:
        return len(self.table)

    def pixels(self, index: int) -> np.ndarray:
        return _rgb(self.table[index]["image"])


class WebDatasetExport(_TorchItems):
    """A ``webdataset`` export (tar shards) as ``(image, target)`` items, by random access."""

    def __init__(self, path: str | os.PathLike, transform: Callable | None = None) -> None:
        self.path = Path(path)
        info_file = self.path / EXPORT_INFO_FILE
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        self.image_extension = info.get("image_extension", "png")
        shards = info.get("shards") or sorted(p.name for p in self.path.glob("*.tar"))
        self.shards = [export_file(self.path, name) for name in shards]
        self.transform = transform
        # Per sample: (sample id, shard, image offset, image size, target offset, target size).
        table = np.array(self._scan(), dtype=np.int64).reshape(-1, 6)
        self.sample_ids, self.index = table[:, 0].copy(), table[:, 1:]
        first = np.load(io.BytesIO(self._member(*self.index[0, [0, 3, 4]]))) if len(table) else np.zeros(0)
        self.targets = _LazyTargets(len(table), int(first.shape[0]), self._read_targets)

    def _scan(self) -> list[tuple[int, ...]]:
        rows: list[tuple[int, ...]] = []
        for shard_no, shard in enumerate(self.shards):
            members: dict[str, dict[str, tuple[int, int]]] = {}
            order: list[str] = []
            with tarfile.open(shard, "r") as tar:
                for member in tar:
                    key, _, extension = member.name.partition(".")
                    if key not in members:
                        members[key] = {}
                        order.append(key)
                    members[key][extension] = (member.offset_data, member.size)
            for key in order:
                entry = members[key]
                if self.image_extension not in entry or TARGET_EXTENSION not in entry:
                    raise DatasetIntegrityError(f"{shard}: sample {key} lacks .{self.image_extension} "
                                                f"or .{TARGET_EXTENSION}")
                rows.append((int(key), shard_no, *entry[self.image_extension], *entry[TARGET_EXTENSION]))
        return rows

    def _member(self, shard: int, offset: int, size: int) -> bytes:
        # Opened per read: safe in DataLoader workers (no file offset shared across forks).
        with open(self.shards[int(shard)], "rb") as handle:
            handle.seek(int(offset))
            return handle.read(int(size))

    def _read_targets(self, start: int, stop: int) -> np.ndarray:
        return np.stack([np.load(io.BytesIO(self._member(*row[[0, 3, 4]]))) for row in self.index[start:stop]])

    def __len__(self) -> int:
        return len(self.index)

    def pixels(self, index: int) -> np.ndarray:
        return decode_member_image(self._member(*self.index[index, :3]), self.image_extension)


def decode_member_image(data: bytes, extension: str) -> np.ndarray:
    """uint8 ``(H, W, 3)`` from a webdataset image member's bytes (png/jpg, or raw ``pixels.npy``)."""
    if extension.endswith("npy"):
        return _rgb(np.load(io.BytesIO(data)))
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return _rgb(np.asarray(image.convert("RGB")))


def open_dataset(path: str | os.PathLike, source: str | None = None, verify: bool = True,
                 transform: Callable | None = None):
    """A round directory or an export as a torch ``Dataset`` of ``(image, target)``.

    Parameters
    ----------
    path : path-like
        Round directory, ``hf`` export or ``webdataset`` export.
    source : str, optional
        Round directories only: image source spec instead of the manifest's.
    verify : bool
        Check the checksums first (the round's manifest, or the export's ``coopt_export.json``).
    transform : callable, optional
        Applied to the image tensor.
    """
    kind = dataset_kind(path)
    if kind == "round":
        return load_optimized_dataset(path, source=source, verify=verify, transform=transform)
    if verify and (Path(path) / EXPORT_INFO_FILE).is_file():
        verify_export(path)
    if kind == "hf":
        return HFExportDataset(path, transform=transform)
    return WebDatasetExport(path, transform=transform)
