"""Export a round's optimized dataset as a self-contained dataset anyone can load.

A round directory (:mod:`coopt_flower.dataset_format`) holds targets and *source sample ids*:
the images stay in the source. An export carries the images too, so the dataset travels to
people who have neither the source nor coopt-flower:

``hf``
    A Hugging Face ``datasets`` folder in both of its layouts: ``datasets.load_dataset(DIR)``
    reads the Parquet shards under ``data/`` that the card's ``configs`` header names (the
    Hub's own layout), and ``datasets.load_from_disk(DIR/arrow)`` the memory-mapped Arrow copy
    that random access (``coopt train``) reads. (datasets refuses ``load_dataset`` on a folder
    whose top level is a ``save_to_disk`` layout, hence the subfolder; the copy doubles the
    size.) Columns ``image``
    (``datasets.Image`` for PNG/JPEG, ``Array3D`` uint8 for raw pixels), ``target`` (the
    aligned target, in the round's dtype), ``sample_id``, ``owner`` and ``prototype``.
``webdataset``
    Tar shards ``data-000000.tar, ...`` written with webdataset's ``TarWriter``, one sample
    per key (``KEY.png`` / ``KEY.jpg`` / ``KEY.pixels.npy``, ``KEY.target.npy``, ``KEY.json``
    with ``sample_id``, ``owner`` and ``prototype``), deterministically (fixed mtime, owner
    and mode).

Both hold, besides the data, ``README.md`` (the dataset card: source, prototypes, uniform
values, reference, residuals, seed, checksums, how it was made, the source's licence and
citation where its metadata names them, see :mod:`coopt_flower.export_card`), ``coopt_manifest.json`` (the round's manifest)
and ``coopt_export.json`` (format, image encoding, sha256 of every exported file).

Rows keep the round's order (sorted sample ids), so row ``i`` of an export is item ``i`` of
:func:`coopt_flower.dataset_format.load_optimized_dataset`. Images are read and encoded one
at a time and written as they come (a generator into Arrow batches, or straight into the tar
shards), so memory stays flat in the dataset size. Everything is written into a hidden
sibling directory and renamed into place at the end: an interrupted export leaves nothing
where a reader would look.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from coopt_flower.atomic import fsync_dir, fsync_file
from coopt_flower.dataset_format import (MANIFEST_FILE, DatasetIntegrityError, load_optimized_dataset, sha256_file,
                                         verify_dataset)
from coopt_flower.manifest import Manifest

log = logging.getLogger(__name__)

FORMATS = ("hf", "webdataset")
IMAGE_FORMATS = ("png", "jpeg", "raw")
CARD_FILE = "README.md"
EXPORT_INFO_FILE = "coopt_export.json"
MANIFEST_COPY_FILE = "coopt_manifest.json"
SHARD_PATTERN = "data-{:06d}.tar"
# hf: the Parquet layout datasets.load_dataset(DIR) reads, at most this many rows per file, and
# the subfolder of the save_to_disk copy.
PARQUET_DIR, PARQUET_ROWS, ARROW_DIR = "data", 50_000, "arrow"
# webdataset: the part of a member name after the key, per image format.
IMAGE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "raw": "pixels.npy"}
TARGET_EXTENSION = "target.npy"
META_EXTENSION = "json"


class ExportError(ValueError):
    """An export cannot be made as asked; the message says what to fix."""


@dataclass(frozen=True)
class ExportOptions:
    """How to export.

    Attributes
    ----------
    format : str
        ``"hf"`` or ``"webdataset"``.
    image_format : str
        ``"png"`` (lossless: the exact pixels the participants encoded), ``"jpeg"``
        (smaller, lossy) or ``"raw"`` (the uint8 pixel arrays as the source stores them).
    jpeg_quality : int
        JPEG quality, 1-100.
    samples_per_shard : int
        webdataset only: samples per tar shard.
    overwrite : bool
        Replace a non-empty output folder.
    source : str, optional
        Image source spec, when not the one recorded in the round's manifest.
    """

    format: str = "hf"
    image_format: str = "png"
    jpeg_quality: int = 95
    samples_per_shard: int = 10_000
    overwrite: bool = False
    source: str | None = None

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"export format must be one of {FORMATS}, got {self.format!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ExportError(f"image format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ExportError(f"JPEG quality must lie in 1..100, got {self.jpeg_quality}")
        if self.samples_per_shard < 1:
            raise ExportError(f"samples per shard must be >= 1, got {self.samples_per_shard}")


# ---------------------------------------------------------------------------- samples
def encode_image(pixels: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes | np.ndarray:
    """One RGB uint8 ``(H, W, 3)`` image as PNG/JPEG bytes, or the array itself for ``raw``.

    PNG is written at a fixed compression level, so the same pixels give the same bytes.
    """
    if image_format == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        image.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    return buffer.getvalue()


def iter_samples(round_dir: str | os.PathLike, image_format: str, jpeg_quality: int = 95,
                 source: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield the round's rows in order, one encoded sample at a time (bounded memory).

    Each item holds ``image`` (bytes, or an array for ``raw``), ``target`` (the round's
    dtype), ``sample_id``, ``owner`` and ``prototype``. The round is not re-verified here.
    """
    dataset = load_optimized_dataset(round_dir, source=source, verify=False)
    prototypes = [p.prototype for p in dataset.manifest.participants]
    shape = None
    for row, sample_id in enumerate(dataset.sample_ids):
        sample_id = int(sample_id)
        try:
            pixels = dataset.image(sample_id)
        except Exception as err:  # noqa: BLE001 - whatever the source raises, say which sample
            raise ExportError(f"cannot read the image of sample {sample_id} from its source "
                              f"({dataset.manifest.source!r}; pass --source to use another "
                              f"copy): {err}") from err
        if image_format == "raw":
            if shape is None:
                shape = pixels.shape
            elif pixels.shape != shape:
                raise ExportError(f"sample {sample_id} is {pixels.shape[:2]} but earlier ones are "
                                  f"{shape[:2]}: raw export needs one image size; use png or jpeg")
        owner = int(dataset.owners[row])
        yield {
            "image": encode_image(pixels, image_format, jpeg_quality),
            "target": np.array(dataset.targets[row]),  # copy out of the memory map
            "sample_id": sample_id,
            "owner": owner,
            "prototype": prototypes[owner],
        }


def _first_image_shape(round_dir: Path, source: str | None) -> tuple[int, ...]:
    dataset = load_optimized_dataset(round_dir, source=source, verify=False)
    if not len(dataset):
        raise ExportError(f"{round_dir} holds no samples; nothing to export")
    return tuple(dataset.image(int(dataset.sample_ids[0])).shape)


# ---------------------------------------------------------------------------- webdataset
def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def sample_key(sample_id: int) -> str:
    """The webdataset key of a sample: its id, zero-padded so keys sort like ids."""
    return f"{sample_id:010d}"


def write_webdataset(samples: Iterator[dict[str, Any]], directory: Path, image_format: str,
                     samples_per_shard: int) -> tuple[list[str], list[int]]:
    """Write samples into tar shards in ``directory`` with webdataset's ``TarWriter``; returns
    the shard file names and each shard's sample count (a stream split over processes needs
    them). Members are encoded here (``encoder=False``), so the bytes do not
    depend on webdataset's default encoders, and stamped with a fixed time, owner and mode."""
    import webdataset

    shards: list[str] = []
    counts: list[int] = []
    writer = None
    extension = IMAGE_EXTENSIONS[image_format]
    try:
        for count, sample in enumerate(samples):
            if count % samples_per_shard == 0:
                if writer is not None:
                    writer.close()
                shards.append(SHARD_PATTERN.format(len(shards)))
                counts.append(0)
                writer = webdataset.TarWriter(str(directory / shards[-1]), encoder=False, user="", group="",
                                              mode=0o644, mtime=0.0)
            image = sample["image"]
            meta = {k: sample[k] for k in ("sample_id", "owner", "prototype")}
            writer.write({"__key__": sample_key(sample["sample_id"]),
                          extension: _npy_bytes(image) if image_format == "raw" else image,
                          TARGET_EXTENSION: _npy_bytes(sample["target"]),
                          META_EXTENSION: json.dumps(meta, sort_keys=True).encode()})
            counts[-1] += 1
    finally:
        if writer is not None:
            writer.close()
    return shards, counts


# ---------------------------------------------------------------------------- Hugging Face
def hf_features(image_format: str, image_shape: tuple[int, ...], target_dim: int, target_dtype: str):
    """The ``datasets.Features`` of an ``hf`` export."""
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence
    image = (datasets.Array3D(shape=tuple(image_shape), dtype="uint8") if image_format == "raw"
             else datasets.Image())
    return datasets.Features({
        "image": image,
        "target": list_type(datasets.Value(target_dtype), length=target_dim),
        "sample_id": datasets.Value("int64"),
        "owner": datasets.Value("int16"),
        "prototype": datasets.Value("string"),
    })


def _hf_rows(round_dir: str, image_format: str, jpeg_quality: int, source: str | None):
    """Generator for ``Dataset.from_generator`` (top-level: plain arguments only)."""
    for sample in iter_samples(round_dir, image_format, jpeg_quality, source):
        if image_format != "raw":
            sample["image"] = {"bytes": sample["image"], "path": None}
        yield sample


def write_hf(round_dir: Path, directory: Path, cache_dir: Path, options: ExportOptions,
             manifest: Manifest) -> None:
    """Stream the round into Arrow (in ``cache_dir``), save it to ``directory/arrow`` and write
    its Parquet shards to ``directory/data``."""
    import datasets

    shape = _first_image_shape(round_dir, options.source)
    features = hf_features(options.image_format, shape, manifest.target_dim, manifest.target_dtype)
    # An explicit fingerprint: datasets would otherwise hash the generator's arguments.
    fingerprint = manifest.files["targets.npy"]["sha256"][:16] + f"-{options.image_format}"
    dataset = datasets.Dataset.from_generator(
        _hf_rows, features=features, cache_dir=str(cache_dir), fingerprint=fingerprint,
        gen_kwargs={"round_dir": str(round_dir), "image_format": options.image_format,
                    "jpeg_quality": options.jpeg_quality, "source": options.source})
    dataset.info.description = (f"CoOpt optimized dataset: {len(dataset)} images of "
                                f"{manifest.source!r} with aligned targets (see README.md)")
    dataset.info.homepage = "https://arxiv.org/abs/2505.14117"
    dataset.save_to_disk(str(directory / ARROW_DIR))
    (directory / PARQUET_DIR).mkdir()
    for name, part in parquet_parts(dataset):
        part.to_parquet(str(directory / PARQUET_DIR / name))


def parquet_parts(dataset) -> Iterator[tuple[str, Any]]:
    """``(file name, rows)`` of the Parquet layout: contiguous parts of at most
    :data:`PARQUET_ROWS` rows, named as the Hub names a split's shards."""
    n = max(1, math.ceil(len(dataset) / PARQUET_ROWS))
    for index in range(n):
        yield f"train-{index:05d}-of-{n:05d}.parquet", dataset.shard(n, index, contiguous=True)


# ---------------------------------------------------------------------------- export
def check_output_dir(out: Path, round_dir: Path, overwrite: bool) -> None:
    """Refuse an output that is not an empty folder (unless ``overwrite``) or that overlaps the round."""
    out_r, round_r = out.resolve(), round_dir.resolve()
    if out_r == round_r or out_r in round_r.parents or round_r in out_r.parents:
        raise ExportError(f"the output {out} overlaps the round directory {round_dir}; choose a "
                          "folder outside it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} is not empty; choose an empty folder or pass --overwrite")


def verify_round(round_dir: Path) -> Manifest:
    """The round's manifest once every file's checksum matches; else an :class:`ExportError`
    naming the file that failed."""
    try:
        return verify_dataset(round_dir)
    except DatasetIntegrityError as err:
        raise ExportError(f"refusing to export {round_dir}: {err}") from err
    except FileNotFoundError as err:
        raise ExportError(f"refusing to export {round_dir}: {err.filename} is missing") from err


def file_checksums(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative names, sorted)."""
    return {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in skip}


def export_dataset(round_dir: str | os.PathLike, out: str | os.PathLike,
                   options: ExportOptions | None = None) -> Path:
    """Export a verified round as a self-contained dataset at ``out``; returns ``out``.

    Parameters
    ----------
    round_dir : path-like
        A round directory written by :class:`~coopt_flower.dataset_format.DatasetWriter`.
    out : path-like
        Output folder: new, empty, or replaced when ``options.overwrite``.
    options : ExportOptions, optional
        Format, image encoding, ... (defaults: ``hf``, PNG).

    Raises
    ------
    ExportError
        The round fails verification (the message names the file), the output folder is
        not empty, or an image cannot be read. Nothing is left at ``out`` then.
    """
    from coopt_flower import __version__
    from coopt_flower.data import open_source, source_metadata
    from coopt_flower.export_card import render_card

    options = options or ExportOptions()
    options.check()
    round_dir, out = Path(round_dir), Path(out)
    check_output_dir(out, round_dir, options.overwrite)
    manifest = verify_round(round_dir)
    try:  # the licence and citation the source's own metadata names, for the card
        source = source_metadata(open_source(options.source or manifest.source))
    except Exception as err:  # noqa: BLE001 - a source that cannot open fails below, naming the sample
        log.warning("could not read the licence of %s: %s", options.source or manifest.source, err)
        source = {"license": None, "citation": None}
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.time_ns()}"
    staging = out.parent / f".{out.name}.tmp-{stamp}"
    cache = out.parent / f".{out.name}.cache-{stamp}"
    staging.mkdir()
    try:
        if options.format == "hf":
            write_hf(round_dir, staging, cache, options, manifest)
            shards: list[str] = []
            shard_samples: list[int] = []
        else:
            samples = iter_samples(round_dir, options.image_format, options.jpeg_quality, options.source)
            shards, shard_samples = write_webdataset(samples, staging, options.image_format,
                                                     options.samples_per_shard)
        info = {
            "format": options.format,
            "image_format": options.image_format,
            "jpeg_quality": options.jpeg_quality if options.image_format == "jpeg" else None,
            "image_extension": IMAGE_EXTENSIONS[options.image_format],
            "shards": shards,
            "shard_samples": shard_samples,
            "num_samples": int(manifest.num_samples),
            "target_dim": int(manifest.target_dim),
            "target_dtype": manifest.target_dtype,
            "round": {"name": round_dir.resolve().name, "manifest_sha256": sha256_file(round_dir / "manifest.json")},
            "coopt_flower_version": __version__,
            "source_license": source["license"],
            "source_citation": source["citation"],
            "files": file_checksums(staging),
        }
        shutil.copyfile(round_dir / MANIFEST_FILE, staging / MANIFEST_COPY_FILE)  # the round's, as written
        (staging / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
        (staging / CARD_FILE).write_text(render_card(manifest, info), encoding="utf-8")
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_file(path)
        fsync_dir(staging)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    log.info("exported %d samples (%s, %s) to %s in %.1f s", manifest.num_samples, options.format,
             options.image_format, out, time.perf_counter() - started)
    return out


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished export into place; an old ``out`` is removed only afterwards."""
    backup = None
    if out.exists():  # empty, or overwrite was asked for (checked before)
        backup = out.parent / f".{out.name}.old-{time.time_ns()}"
        os.rename(out, backup)
    os.rename(staging, out)
    fsync_dir(out.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


# ---------------------------------------------------------------------------- hub
def push_to_hub(export_dir: str | os.PathLike, repo_id: str, *, private: bool = False,
                token: str | None = None) -> str:
    """Upload an export to the Hugging Face Hub as a dataset repository; returns its URL.

    The folder is uploaded as it is, but for an ``hf`` export's Arrow copy: its Parquet
    shards and the card's ``configs`` header are the Hub's own layout (so
    ``datasets.load_dataset(repo_id)`` works), and the Hub reads a ``webdataset`` export's tar
    shards as WebDataset. Needs the network and a token (``huggingface-cli login``).
    """
    import huggingface_hub

    export_dir = Path(export_dir)
    info = json.loads((export_dir / EXPORT_INFO_FILE).read_text(encoding="utf-8"))
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(export_dir), repo_id=repo_id, repo_type="dataset",
                      ignore_patterns=[f"{ARROW_DIR}/*"] if info["format"] == "hf" else None)
    return f"https://huggingface.co/datasets/{repo_id}"
