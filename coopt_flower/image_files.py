"""Listing the images of a folder source, including the entries that will not open.

A folder is listed with :func:`list_image_files` so that broken symlinks, symlink loops and
unreadable files become *bad samples with a reason* at decoding, instead of vanishing from the
ids (a user who counts their files would then see a number that does not match).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_image_files(root: Path) -> list[Path]:
    """Every entry under ``root`` named like an image, sorted: files, and also the entries that
    will not open (broken symlinks, symlink loops, unreadable files), so decoding lists them
    among the skipped samples with the reason rather than dropping them unseen. Symlinked
    folders are not followed; a folder that cannot be listed is named in a warning."""
    found: list[Path] = []

    def unlisted(error: OSError) -> None:
        log.warning("%s: folder %s skipped, it cannot be listed (%s)", root, error.filename,
                    error.strerror or error)

    for folder, _, names in os.walk(root, onerror=unlisted):
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and (path.is_symlink() or path.is_file()):
                found.append(path)
    return sorted(found)


def dangling_link_reason(path: Path) -> str:
    """Why a symlink that does not resolve will not open, in words."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symlink loop ({path.name} -> {os.readlink(path)} never reaches a file)"
    return f"broken symlink (its target {os.readlink(path)} does not exist)"
