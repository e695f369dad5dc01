"""The optimized dataset on disk: the product a CoOpt run leaves behind.

A dataset is a directory that anyone can load without Flower::

    manifest.json     format version, source spec, n, dtype, participants (prototype, dim,
                      uniform value, alignment residuals, sample count), shared-subset ids,
                      timings, and a sha256 for every data file
    targets.npy       (N, n) float16/float32, memory-mappable, rows sorted by sample id
    sample_ids.npy    (N,) int64, sorted: row i holds the target of sample sample_ids[i]
    owners.npy        (N,) int16, index into the manifest's participants of who encoded row i
                      (under ``merge: heads`` also the space row i's target lives in)
    shared_embeddings.npy  (optional) (K, |S|, n) float32: every participant's projected,
                      unaligned embeddings of the shared subset, so later participants can be
                      scored and aligned against this dataset without re-encoding S

The manifest's schema is :class:`coopt_flower.manifest.Manifest`; the writer that streams a
dataset here and publishes it atomically is :class:`coopt_flower.dataset_writer.DatasetWriter`.
This module reads: :func:`load_optimized_dataset` checks the checksums and returns a torch
``Dataset`` of ``(image, target)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from coopt_flower.manifest import FORMAT_VERSION, Manifest
from coopt_flower.merges import Merge

MANIFEST_FILE = "manifest.json"
TARGETS_FILE = "targets.npy"
SAMPLE_IDS_FILE = "sample_ids.npy"
OWNERS_FILE = "owners.npy"
SHARED_EMBEDDINGS_FILE = "shared_embeddings.npy"
DATA_FILES = (TARGETS_FILE, SAMPLE_IDS_FILE, OWNERS_FILE)
TARGET_DTYPES = ("float16", "float32")


class DatasetIntegrityError(RuntimeError):
    """A dataset on disk is incomplete, corrupted or of an unknown format."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so memory stays flat for any size."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def safe_file_name(name: str) -> bool:
    """Whether ``name`` is a plain file name inside a dataset directory: no separators, no
    ``..``, not hidden, printable. Names that come from participants (node-local data) must
    pass this so they cannot escape the output directory."""
    return (bool(name) and name == os.path.basename(name) and "/" not in name and "\\" not in name
            and name not in (".", "..") and not name.startswith(".") and name.isprintable()
            and "\x00" not in name and len(name) <= 200)


def dataset_file(root: str | os.PathLike, name: str, what: str = "file") -> Path:
    """The file ``name`` of the dataset at ``root``, refused unless it lies inside it.

    A shared dataset is untrusted input: its manifest may name ``/etc/passwd``, ``../x`` or a
    symlink that leaves the directory. Dataset files are plain names in the directory itself
    (:func:`safe_file_name`), regular files, not links.
    """
    root = Path(root)
    if not isinstance(name, str) or not safe_file_name(name):
        raise DatasetIntegrityError(f"{root}: the manifest names {what} {name!r}, which is not a plain "
                                    "file name inside the dataset; refusing to read it")
    path = root / name
    if path.is_symlink() or (path.exists() and path.resolve().parent != root.resolve()):
        raise DatasetIntegrityError(f"{root}: {name} is a link out of the dataset; refusing to read it")
    if path.exists() and not path.is_file():
        raise DatasetIntegrityError(f"{root}: {name} is not a regular file")
    return path


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Load and sanity-check ``manifest.json`` of a dataset directory: its version, and that
    every file it names lies inside the dataset (:func:`dataset_file`)."""
    manifest_path = Path(path) / MANIFEST_FILE
    if not manifest_path.exists():
        raise DatasetIntegrityError(f"{path} is not an optimized dataset (no {MANIFEST_FILE})")
    try:
        values = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest = Manifest.from_json(values)
    except (ValueError, TypeError, AttributeError) as error:
        raise DatasetIntegrityError(f"{manifest_path} is not a readable manifest ({error})") from None
    if manifest.format_version != FORMAT_VERSION:
        raise DatasetIntegrityError(
            f"{path} has format version {values.get('format_version')}; this coopt_flower reads {FORMAT_VERSION}"
        )
    for name in manifest.files:
        dataset_file(path, name)
    for name in DATA_FILES:
        if name not in manifest.files:
            raise DatasetIntegrityError(f"{path}: the manifest has no checksum of {name}")
    for entry in manifest.local_sources:
        if entry.images is not None:
            dataset_file(path, entry.images, "uploaded images")
            if entry.images not in manifest.files:
                raise DatasetIntegrityError(f"{path}: uploaded images {entry.images} have no checksum in the manifest")
    return manifest


def check_array(path: Path, shape: tuple[int, ...], dtype: str) -> None:
    """A ``.npy`` file's header against the manifest, and its size against the header, before
    it is memory-mapped (a truncated or swapped file is refused in one line, not mapped)."""
    try:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            found_shape, _, found_dtype = read_header(handle)
            data_offset = handle.tell()
    except (OSError, ValueError) as error:
        raise DatasetIntegrityError(f"{path} is not a readable .npy file ({error})") from None
    if tuple(found_shape) != tuple(shape) or np.dtype(found_dtype) != np.dtype(dtype):
        raise DatasetIntegrityError(f"{path} holds {np.dtype(found_dtype)} {tuple(found_shape)}, the manifest "
                                    f"says {np.dtype(dtype)} {tuple(shape)}")
    expected = data_offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if path.stat().st_size != expected:
        raise DatasetIntegrityError(f"{path} is {path.stat().st_size} bytes, its header needs {expected} "
                                    "(truncated or padded)")


def verify_dataset(path: str | os.PathLike) -> Manifest:
    """Check every data file's sha256 against the manifest; returns the manifest."""
    manifest = read_manifest(path)
    for name, meta in manifest.files.items():
        file = dataset_file(path, name)
        if not file.exists():
            raise DatasetIntegrityError(f"{file} is missing (the manifest lists it)")
        actual = sha256_file(file)
        if actual != meta["sha256"]:
            raise DatasetIntegrityError(
                f"{Path(path) / name} is corrupted: sha256 {actual[:12]}... does not match "
                f"the manifest's {meta['sha256'][:12]}..."
            )
    return manifest


class OptimizedDataset:
    """A CoOpt dataset as a torch ``Dataset`` of ``(image, target)``.

    ``image`` is a ``torch.uint8`` tensor ``(3, H, W)`` read from the source the dataset was
    built from; ``target`` a ``torch.float32`` tensor ``(n,)``. Targets stay memory-mapped.

    Parameters
    ----------
    path : path-like
        Dataset directory.
    source : ImageSource or str, optional
        Where the images come from; defaults to the manifest's ``source`` spec.
    verify : bool
        Check the checksums first (reads every byte once).
    transform : callable, optional
        Applied to the image tensor.
    """

    def __init__(self, path, source=None, verify: bool = True, transform=None) -> None:
        self.path = Path(path)
        self.manifest = verify_dataset(self.path) if verify else read_manifest(self.path)
        m, n = self.manifest, self.manifest.num_samples
        # Headers and sizes against the manifest before anything is mapped (untrusted input).
        check_array(dataset_file(self.path, TARGETS_FILE), (n, m.target_dim), m.target_dtype)
        check_array(dataset_file(self.path, SAMPLE_IDS_FILE), (n,), "int64")
        check_array(dataset_file(self.path, OWNERS_FILE), (n,), "int16")
        self.targets = np.load(self.path / TARGETS_FILE, mmap_mode="r")
        self.sample_ids = np.load(self.path / SAMPLE_IDS_FILE)
        self.owners = np.load(self.path / OWNERS_FILE, mmap_mode="r")
        self._source = source
        self.transform = transform
        # Samples that came from participants' node-local data: their ids follow the source's.
        self.local_sources = sorted(self.manifest.local_sources, key=lambda e: e.first_id)
        self._local_images: dict[str, np.ndarray] = {}

    @property
    def source(self):
        if self._source is None or isinstance(self._source, str):
            from coopt_flower.data import open_source

            self._source = open_source(self._source or self.manifest.source)
        return self._source

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def merge(self) -> Merge:
        """How the targets were merged (manifest ``merge``): ``align-*`` (one space, the
        reference's), ``heads`` / ``multi-teacher`` (row ``i`` lives in the space of participant
        ``owners[i]``) or ``none`` (the no-alignment ablation). Datasets written before the key: ``align-ridge``."""
        return self.manifest.merge

    def shared_embeddings(self) -> np.ndarray | None:
        """float32 ``(K, |S|, n)``: participant ``k``'s unaligned, projected embeddings of the
        shared subset (the manifest's ``shared_ids``, in that order), or None when the dataset
        was written without them. Checked against the manifest (participants, S, n) first."""
        if SHARED_EMBEDDINGS_FILE not in self.manifest.files:
            return None
        m = self.manifest
        path = dataset_file(self.path, SHARED_EMBEDDINGS_FILE)
        check_array(path, (len(m.participants), len(m.shared_ids), m.target_dim), "float32")
        return np.load(path, allow_pickle=False)

    def image(self, sample_id: int) -> np.ndarray:
        """uint8 ``(H, W, 3)`` of one sample: from the source, or from node-local data
        (uploaded into the dataset, or read from the node's folder where it was not)."""
        for entry in self.local_sources:
            if entry.holds(sample_id):
                row = sample_id - entry.first_id
                if entry.images:
                    if entry.images not in self._local_images:
                        self._local_images[entry.images] = np.load(dataset_file(self.path, entry.images),
                                                                   mmap_mode="r", allow_pickle=False)
                    return np.array(self._local_images[entry.images][row])  # copy out of the read-only map
                from coopt_flower.data import open_source

                return open_source(entry.spec).images(np.array([row]))[0]
        return self.source.images(np.array([sample_id]))[0]

    def images(self, rows: np.ndarray) -> np.ndarray:
        """uint8 ``(len(rows), H, W, 3)`` of the samples at these rows, read in one batch
        from the source (node-local samples one by one)."""
        ids = self.sample_ids[np.asarray(rows, dtype=np.int64)]
        if not self.local_sources:
            return self.source.images(ids)
        return np.stack([self.image(int(i)) for i in ids]) if len(ids) else \
            self.source.images(ids)

    def __getitem__(self, index: int):
        import torch

        image = torch.from_numpy(self.image(int(self.sample_ids[index]))).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        target = torch.from_numpy(np.array(self.targets[index], dtype=np.float32))  # copy: memmap is read-only
        return image, target

    def labels(self) -> np.ndarray | None:
        """Labels of the samples from the source, if it has any (for probing); None when
        the dataset also holds node-local samples."""
        if self.local_sources:
            return None
        return self.source.labels(self.sample_ids)


def load_optimized_dataset(path, source=None, verify: bool = True, transform=None) -> OptimizedDataset:
    """Open a dataset directory written by :class:`DatasetWriter` (see :class:`OptimizedDataset`)."""
    return OptimizedDataset(path, source=source, verify=verify, transform=transform)
