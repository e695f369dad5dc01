"""Writing an optimized dataset: pages of targets streamed to disk, published atomically.

:class:`DatasetWriter` streams pages of targets straight into memory-mapped files in a hidden
temporary directory and only renames it into place once everything is written, checksummed and
fsynced, so a crash never leaves a half-written dataset where a reader would find it (the
layout it writes is :mod:`coopt_flower.dataset_format`'s).

Disk space is reserved when a file is created (``posix_fallocate``): a memory-mapped write on a
full filesystem kills the process with SIGBUS, while a reservation that does not fit raises
:class:`~coopt_flower.errors.OutputDirError` at once, and the temporary directory is removed.
The files written only on :meth:`DatasetWriter.commit` (ids, manifest, report, plots) get their
space up front too: a hidden reserve file holds it from the start and is deleted just before
they are written, so a disk that fills while pages arrive cannot stop the publish.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from coopt_flower.atomic import fsync_dir, fsync_file, write_bytes_atomic, write_text_atomic
from coopt_flower.dataset_format import (DATA_FILES, MANIFEST_FILE, OWNERS_FILE, SAMPLE_IDS_FILE, TARGET_DTYPES,
                                         TARGETS_FILE, DatasetIntegrityError, safe_file_name, sha256_file)
from coopt_flower.errors import OutputDirError, describe_os_error
from coopt_flower.manifest import FORMAT_VERSION


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate a file's blocks now, so writing it through a memory map cannot hit a full disk.

    Raises
    ------
    OutputDirError
        One line when the filesystem cannot hold the file.
    """
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        if size and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as error:
                if error.errno not in (95, 22):  # EOPNOTSUPP/EINVAL: filesystem cannot reserve
                    raise
    except OSError as error:
        raise OutputDirError(f"{describe_os_error(error, Path(path).parent.parent)} "
                             f"({size / 2**20:.1f} MiB needed for {Path(path).name})") from None
    finally:
        os.close(fd)


#: Room for what publishing writes besides the arrays: three plots (~30 KB each), the report in
#: two forms, the manifest, and the run's progress file, summary and rounds plot written right
#: after the dataset is in place.
PUBLISH_FILES_BYTES = 2 << 20

#: Manifest bytes per sample at most: missing and bad sample ids are listed one per line.
MANIFEST_BYTES_PER_SAMPLE = 24

#: The hidden file that holds the publish reserve inside the temporary directory.
RESERVE_FILE = ".publish-reserve"


def publish_reserve_bytes(num_samples: int, extra_array_bytes: int = 0) -> int:
    """Bytes publishing a dataset of ``num_samples`` writes after its pages: the sample ids,
    the extra arrays (``extra_array_bytes``, e.g. the shared-subset embeddings), and the small
    files (:data:`PUBLISH_FILES_BYTES`, :data:`MANIFEST_BYTES_PER_SAMPLE`)."""
    npy_headers = 3 * 128
    return (8 * int(num_samples) + int(extra_array_bytes) + npy_headers + PUBLISH_FILES_BYTES
            + MANIFEST_BYTES_PER_SAMPLE * int(num_samples))


def hold_space(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes allocated on disk (zeros written where the
    filesystem cannot ``posix_fallocate``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except (OSError, AttributeError) as error:
            if getattr(error, "errno", 95) not in (95, 22):  # EOPNOTSUPP/EINVAL: cannot reserve
                raise
        zeros = bytes(1 << 20)
        for start in range(0, size, len(zeros)):
            os.write(fd, zeros[: min(len(zeros), size - start)])
        os.fsync(fd)
    finally:
        os.close(fd)


def open_reserved_memmap(path: Path, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``open_memmap(mode="w+")`` with its disk space reserved first (see :func:`reserve_space`)."""
    try:
        header_only = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    except OSError as error:
        raise OutputDirError(describe_os_error(error, path.parent.parent)) from None
    del header_only  # the file has its full size; reserve its blocks before writing any
    reserve_space(path)
    return np.lib.format.open_memmap(path, mode="r+")


#: Memory a writer may dirty through its memory maps before it writes the pages back and lets
#: go of them. The rows of a page are scattered over the whole file (shards are random
#: samples), so every row dirties a whole memory page: without this the entire file would end
#: up resident and memory would grow with N.
RELEASE_EVERY_BYTES = 32 << 20

#: Memory one piece of a page may dirty: :meth:`DatasetWriter.write` stores a page in pieces
#: and releases between them, so the memory a write holds does not depend on the page size.
WRITE_PIECE_BYTES = 8 << 20

#: Rows per step when the writer scans its per-row state (bounded temporaries for any N).
SCAN_ROWS = 1 << 20


def sorted_unique_ids(ids: np.ndarray) -> np.ndarray:
    """``ids`` as sorted unique int64: the array itself (read-only view, no copy) when it is
    sorted and unique already, as a round's sample ids are; else a sorted copy.

    Raises
    ------
    ValueError
        When ``ids`` holds an id twice.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    last = len(ids) - 1  # compared in chunks: a whole-array comparison is a byte per id
    increasing = all(bool(np.all(ids[i + 1: i + SCAN_ROWS + 1] > ids[i: min(i + SCAN_ROWS, last)]))
                     for i in range(0, max(last, 0), SCAN_ROWS))
    if increasing:
        view = ids.view()
        view.flags.writeable = False
        return view
    unique = np.unique(ids)
    if len(unique) != len(ids):
        raise ValueError("sample ids given to the writer contain duplicates")
    return unique


class RowBits:
    """One bit per row (``n / 8`` bytes, not a byte per row as a bool array takes)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self.bits = np.zeros((self.n + 7) // 8, dtype=np.uint8)

    def get(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return ((self.bits[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1).astype(bool)

    def set(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        np.bitwise_or.at(self.bits, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Bools of rows ``start:stop`` (``start`` a multiple of 8)."""
        return np.unpackbits(self.bits[start // 8: (stop + 7) // 8], count=stop - start,
                             bitorder="little").astype(bool)

    def count(self) -> int:
        return int(np.unpackbits(self.bits, count=self.n, bitorder="little").sum()) if self.n else 0


def release_pages(array: np.ndarray) -> None:
    """Write a memory map's dirty pages to its file and drop them from this process's memory.

    The data stays in the file (and the page cache); the mapping faults pages back in if they
    are touched again.
    """
    mapped = getattr(array, "_mmap", None)
    if mapped is None:
        return
    array.flush()
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


class DatasetWriter:
    """Stream targets page by page into a new dataset directory, then publish it atomically.

    Parameters
    ----------
    path : path-like
        Final directory. Must not exist yet unless ``overwrite`` is set; it appears only
        when :meth:`commit` succeeds.
    sample_ids : np.ndarray
        Every sample id the dataset will hold (any order; stored sorted, unique). Ids that are
        sorted and unique already are kept by reference, not copied: do not change them while
        the writer is open.
    target_dim : int
        Common target dimension n.
    dtype : str
        ``"float16"`` (half the disk) or ``"float32"``.
    overwrite : bool
        Replace an existing directory at ``path`` on commit.
    reserve_bytes : int
        Disk space to hold from the start for what :meth:`commit` writes besides the
        streamed arrays (:func:`publish_reserve_bytes`); released as the commit begins.

    Use it as a context manager: leaving the block with an exception discards the temporary
    directory and leaves whatever was at ``path`` before untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_ids: np.ndarray,
        target_dim: int,
        dtype: str = "float16",
        overwrite: bool = False,
        reserve_bytes: int = 0,
    ) -> None:
        if dtype not in TARGET_DTYPES:
            raise ValueError(f"target dtype must be one of {TARGET_DTYPES}, got {dtype!r}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; choose another output path")
        # Sorted unique ids (a round's) are kept as they are: no second copy of N ids.
        self.sample_ids = sorted_unique_ids(sample_ids)
        self.target_dim = int(target_dim)
        self.dtype = dtype
        self.overwrite = overwrite
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{time.time_ns()}"
        self._arrays: dict[str, np.ndarray] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir()
        except OSError as error:
            raise OutputDirError(describe_os_error(error, self.path.parent)) from None
        n = len(self.sample_ids)
        try:
            self._targets = open_reserved_memmap(self.tmp / TARGETS_FILE, dtype, (n, self.target_dim))
            self._owners = open_reserved_memmap(self.tmp / OWNERS_FILE, np.int16, (n,))
            self.reserve_bytes = int(reserve_bytes)
            self._hold_publish_space()
        except BaseException:
            self.abort()
            raise
        self._owners[:] = -1
        self._unreleased = 0
        self._written = RowBits(n)
        self._excluded = RowBits(n)
        self._num_written = 0

    def _hold_publish_space(self) -> None:
        if self.reserve_bytes <= 0:
            return
        try:
            hold_space(self.tmp / RESERVE_FILE, self.reserve_bytes)
        except OSError as error:
            raise OutputDirError(f"{describe_os_error(error, self.path.parent)} "
                                 f"({self.reserve_bytes / 2**20:.1f} MiB more needed to publish "
                                 f"{self.path.name}: ids, manifest, report, plots)") from None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row index of every id; raises for ids the dataset does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.searchsorted(self.sample_ids, ids)
        rows = np.minimum(rows, len(self.sample_ids) - 1)
        unknown = ids[self.sample_ids[rows] != ids]
        if unknown.size:
            raise ValueError(f"{unknown.size} sample ids are not part of this dataset, e.g. {unknown[:5]}")
        return rows

    def write(self, ids: np.ndarray, targets: np.ndarray, owner: int) -> None:
        """Store one page: ``targets[i]`` is the target of sample ``ids[i]``."""
        targets = np.asarray(targets)
        if targets.shape != (len(ids), self.target_dim):
            raise ValueError(
                f"page of {len(ids)} ids needs targets of shape {(len(ids), self.target_dim)}, "
                f"got {targets.shape}"
            )
        rows = self.rows_of(ids)
        # Stored in row order, piece by piece: a piece's rows share memory pages, and a release
        # between pieces bounds what one write holds however large the page is.
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        if np.any(rows[1:] == rows[:-1]) or self._written.get(rows).any():
            raise ValueError("page writes sample ids that were already written")
        row_bytes = self._targets.itemsize * self.target_dim
        piece = max(1, WRITE_PIECE_BYTES // max(row_bytes, mmap.PAGESIZE))
        for start in range(0, len(rows), piece):
            part = rows[start: start + piece]
            self._targets[part] = targets[order[start: start + piece]].astype(self.dtype)
            self._owners[part] = owner
            first = (self._targets.offset + part * row_bytes) // mmap.PAGESIZE
            last = (self._targets.offset + (part + 1) * row_bytes - 1) // mmap.PAGESIZE
            touched = np.unique(np.concatenate([first, last])).size + int((last - first - 1).clip(0).sum())
            self._unreleased += touched * mmap.PAGESIZE
            if self._unreleased >= RELEASE_EVERY_BYTES:
                self.release()
        self._written.set(rows)
        self._num_written += len(rows)

    def release(self) -> None:
        """Write what the memory maps hold back to disk and drop their pages from memory
        (see :data:`RELEASE_EVERY_BYTES`); called every so many bytes written."""
        for array in (self._targets, self._owners, *self._arrays.values()):
            release_pages(array)
        self._unreleased = 0

    def exclude(self, ids: np.ndarray) -> None:
        """Leave ``ids`` out of the dataset on purpose (samples whose image cannot be decoded):
        they are not written and, unlike missing samples, do not block :meth:`commit`."""
        if len(ids):
            self._excluded.set(self.rows_of(ids))

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays made with :meth:`create_array`, by file name."""
        return self._arrays

    def create_array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A memory-mapped ``name.npy`` in the dataset, written in place, checksummed on commit.

        Used for data that arrives page by page besides the targets (uploaded images).
        """
        if not safe_file_name(name) or not name.endswith(".npy") or name in DATA_FILES \
                or name in self._arrays:
            raise ValueError(f"array name must be a new '<name>.npy', got {name!r}")
        self._arrays[name] = open_reserved_memmap(self.tmp / name, dtype, tuple(shape))
        return self._arrays[name]

    def _rows_where(self, keep) -> np.ndarray:
        """Rows whose ``keep(written, excluded)`` holds, scanned in bounded chunks."""
        n = len(self.sample_ids)
        found = [start + np.flatnonzero(keep(self._written.chunk(start, stop), self._excluded.chunk(start, stop)))
                 for start in range(0, n, SCAN_ROWS) for stop in [min(start + SCAN_ROWS, n)]]
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def missing_ids(self) -> np.ndarray:
        """Ids that no page has written yet (excluded ones aside)."""
        if self._num_written == len(self.sample_ids):
            return np.empty(0, np.int64)
        return self.sample_ids[self._rows_where(lambda written, excluded: ~written & ~excluded)]

    def excluded_ids(self) -> np.ndarray:
        """Ids left out with :meth:`exclude`."""
        return self.sample_ids[self._rows_where(lambda written, excluded: excluded & ~written)]

    def commit(
        self,
        manifest: dict[str, Any],
        extra_files: dict[str, str | bytes] | None = None,
        extra_arrays: dict[str, np.ndarray] | None = None,
        allow_missing: bool = False,
    ) -> Path:
        """Checksum, fsync and publish the dataset; returns its final path.

        Parameters
        ----------
        manifest : dict
            Run metadata; the writer adds format, shape, dtype and checksum fields.
        extra_files : dict, optional
            Small files published inside the dataset directory: text (a report) or bytes (a plot).
        extra_arrays : dict, optional
            ``name.npy`` -> array, stored and checksummed like the data files.
        allow_missing : bool
            Publish even though some samples were never written (they are left out and listed
            in the manifest's ``missing_sample_ids``); otherwise that is an error.
        """
        try:
            return self._commit(manifest, extra_files, extra_arrays, allow_missing)
        except OutputDirError:
            raise
        except OSError as error:  # e.g. the disk filled up writing the small files
            needed = max(self.reserve_bytes, publish_reserve_bytes(len(self.sample_ids)))
            raise OutputDirError(f"{describe_os_error(error, self.path.parent)} (publishing "
                                 f"{self.path.name} needs about {needed / 2**20:.1f} MiB more)") from None

    def _commit(self, manifest, extra_files, extra_arrays, allow_missing) -> Path:
        # The space held since the start is what the files below are written into.
        (self.tmp / RESERVE_FILE).unlink(missing_ok=True)
        missing = self.missing_ids()
        if missing.size and not allow_missing:
            raise DatasetIntegrityError(
                f"{missing.size} samples were never written (e.g. {missing[:5]}); refusing "
                "to publish an incomplete dataset"
            )
        if self._num_written != len(self.sample_ids):
            self._drop_unwritten_rows()
        np.save(self.tmp / SAMPLE_IDS_FILE, self.sample_ids)
        for name, array in (extra_arrays or {}).items():
            if not safe_file_name(name) or not name.endswith(".npy") or name in DATA_FILES:
                raise ValueError(f"extra array name must be a new '<name>.npy', got {name!r}")
            np.save(self.tmp / name, array)
        for array in (self._targets, self._owners, *self._arrays.values()):
            array.flush()
        streamed = tuple(self._arrays)
        # Close the memory maps before hashing and renaming.
        del self._targets, self._owners
        self._arrays.clear()
        checked = DATA_FILES + tuple(extra_arrays or ()) + streamed
        for name in checked:
            fsync_file(self.tmp / name)
        full = dict(manifest)
        full["missing_sample_ids"] = missing.tolist()
        full.update(
            format_version=FORMAT_VERSION,
            num_samples=int(len(self.sample_ids)),
            target_dim=self.target_dim,
            target_dtype=self.dtype,
            files={name: {"sha256": sha256_file(self.tmp / name)} for name in checked},
        )
        for name, content in (extra_files or {}).items():
            if isinstance(content, bytes):
                write_bytes_atomic(self.tmp / name, content)
            else:
                write_text_atomic(self.tmp / name, content)
        write_text_atomic(self.tmp / MANIFEST_FILE, json.dumps(full, indent=2, sort_keys=True))
        fsync_dir(self.tmp)

        backup = None
        if self.path.exists():  # only reachable with overwrite=True
            backup = self.path.parent / f".{self.path.name}.old-{time.time_ns()}"
            os.rename(self.path, backup)
        os.rename(self.tmp, self.path)
        fsync_dir(self.path.parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return self.path

    def _drop_unwritten_rows(self, chunk_rows: int = 65536) -> None:
        """Compact the memory maps to the written rows, copying in chunks (bounded memory)."""
        keep = self._rows_where(lambda written, excluded: written)
        n = len(keep)
        targets = open_reserved_memmap(self.tmp / f"{TARGETS_FILE}.compact", self.dtype, (n, self.target_dim))
        owners = open_reserved_memmap(self.tmp / f"{OWNERS_FILE}.compact", np.int16, (n,))
        for start in range(0, n, chunk_rows):
            rows = keep[start: start + chunk_rows]
            targets[start: start + len(rows)] = self._targets[rows]
            owners[start: start + len(rows)] = self._owners[rows]
        targets.flush(), owners.flush()
        del self._targets, self._owners, targets, owners
        os.replace(self.tmp / f"{TARGETS_FILE}.compact", self.tmp / TARGETS_FILE)
        os.replace(self.tmp / f"{OWNERS_FILE}.compact", self.tmp / OWNERS_FILE)
        self._targets = np.load(self.tmp / TARGETS_FILE, mmap_mode="r+")
        self._owners = np.load(self.tmp / OWNERS_FILE, mmap_mode="r+")
        self.sample_ids = self.sample_ids[keep]
        self._written, self._excluded = RowBits(n), RowBits(n)
        self._written.set(np.arange(n))
        self._num_written = n

    def abort(self) -> None:
        """Discard everything written so far."""
        for name in ("_targets", "_owners"):
            if hasattr(self, name):
                delattr(self, name)
        self._arrays.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
