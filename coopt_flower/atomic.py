"""Atomic file writes: a reader sees the old file or the whole new one, never a torn one.

Every file the project publishes (checkpoints, manifests, reports, caches, keys) is written
to a hidden temporary file in the same directory (``.NAME.tmp-PID``), flushed and fsynced,
then renamed over the destination. A crash mid-write leaves the previous file intact and a
temporary file that :func:`is_temporary` recognises.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

TMP_MARKER = ".tmp-"


def temporary_name(path: str | os.PathLike) -> Path:
    """The hidden temporary sibling a write of ``path`` goes through."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file an interrupted atomic write left behind."""
    name = Path(path).name
    return name.startswith(".") and TMP_MARKER in name


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, permissions: int | None = None,
                encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``.

    Parameters
    ----------
    path : path-like
        The destination; its directory must exist.
    mode : str
        ``"wb"`` or ``"w"``.
    permissions : int, optional
        File mode bits, applied when the temporary file is created (a private key is never,
        even briefly, readable by others).
    encoding : str, optional
        For text mode (default UTF-8).

    On an exception the temporary file is removed and the destination is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    tmp = temporary_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o666 if permissions is None else permissions)
    try:
        if permissions is not None:
            os.chmod(tmp, permissions)  # the umask may have narrowed what os.open set
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None) as handle:
            fd = -1
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (UTF-8) atomically; returns its path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, permissions: int | None = None) -> Path:
    """Write a binary file atomically; returns its path."""
    with atomic_open(path, "wb", permissions=permissions) as handle:
        handle.write(data)
    return Path(path)


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    """``numpy.save`` atomically; returns its path."""
    import numpy as np

    with atomic_open(path, "wb") as handle:
        np.save(handle, array)
    return Path(path)


def torch_save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (creating the directory); returns its path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return path
