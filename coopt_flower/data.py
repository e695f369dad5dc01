"""Image sources, sharding and shared-subset selection (no Flower imports).

An image source is addressed by one spec string so that the platform and every participant can
open the same data from a run config:

``fashion-mnist`` / ``fashion-mnist:test``
    The embedded default: Debian's ``dataset-fashion-mnist`` (gzipped IDX files under
    ``/usr/share/datasets/fashion-mnist``; ``$COOPT_FASHION_MNIST_DIR`` points elsewhere).
``folder:/path/to/images``
    A folder of images, flat or in ImageFolder layout (``class_x/img.png``: labels from the
    sub-folder names). Images are resized (shorter side) and center-cropped to
    ``$COOPT_FOLDER_IMAGE_SIZE`` (default 224) so a batch stacks into one array.
``hf:<dataset>[:split]``
    A Hugging Face dataset (e.g. ``hf:uoft-cs/cifar10``) through ``flwr-datasets``; needs
    the network on the user's machine, the first time.

The forms are prefix families of one registry, :data:`DATA_SOURCES`
(:class:`coopt_flower.registry.Registry`); a project may add its own with
``@DATA_SOURCES.register("name", prefix=True)`` on a function ``open(body) -> ImageSource``.

Every source returns RGB ``uint8`` batches of shape ``(B, H, W, 3)`` for a list of integer
sample ids ``0 .. len(source) - 1``. Ids are the identity of a sample everywhere: in messages,
in the merged dataset and in reports.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from coopt_flower.image_decoding import decode_reason, fit_square, open_rgb, to_rgb
from coopt_flower.image_files import IMAGE_SUFFIXES, dangling_link_reason, list_image_files
from coopt_flower.registry import Registry

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DataSourceError(ValueError):
    """A data source spec or the data behind it is unusable; the message says what to fix."""


@dataclass(frozen=True)
class BadSample:
    """A sample whose image cannot be decoded: the data's fault, never a participant's.

    ``sample_id`` is the id in the source that was read (a node's own index for node-local
    data until the platform maps it), ``name`` the file (relative to the source's folder),
    ``reason`` the decoder's one-line message.
    """

    sample_id: int
    name: str
    reason: str

    def as_dict(self) -> dict:
        return {"id": int(self.sample_id), "name": self.name, "reason": self.reason}

    @classmethod
    def from_dict(cls, entry: dict) -> BadSample:
        return cls(int(entry["id"]), str(entry.get("name", "")), str(entry.get("reason", "")))


class SampleDecodeError(DataSourceError):
    """One image of a source cannot be decoded (:attr:`bad` says which and why)."""

    def __init__(self, bad: BadSample, spec: str = "") -> None:
        self.bad = bad
        where = f" of {spec}" if spec else ""
        super().__init__(f"sample {bad.sample_id}{where} ({bad.name}) cannot be decoded: {bad.reason}")


class ImageSource(Protocol):
    """What the rest of coopt_flower needs from a dataset of images."""

    spec: str

    def __len__(self) -> int: ...

    def images(self, ids: np.ndarray) -> np.ndarray:
        """RGB uint8 ``(len(ids), H, W, 3)``."""

    def labels(self, ids: np.ndarray) -> np.ndarray | None:
        """int64 labels for ``ids``, or None for unlabeled data."""


def _check_ids(ids: np.ndarray, size: int, spec: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise DataSourceError(f"sample ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise DataSourceError(
            f"sample ids must lie in [0, {size}) for {spec!r}, got range "
            f"[{ids.min()}, {ids.max()}]"
        )
    return ids


# ----------------------------------------------------------------------------- sources


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataSourceError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(shape)):
        raise DataSourceError(f"{path} is truncated: header says {shape}, got {array.size} bytes")
    return array.reshape(shape)


@dataclass
class ArraySource:
    """Images held in one uint8 array (grayscale ``(N, H, W)`` or RGB ``(N, H, W, 3)``)."""

    spec: str
    pixels: np.ndarray
    targets: np.ndarray | None = None
    #: The data's licence (a Hugging Face licence id, e.g. ``mit``) and citation, when known:
    #: an export's dataset card carries them.
    license: str | None = None
    citation: str | None = None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def images(self, ids: np.ndarray) -> np.ndarray:
        batch = self.pixels[_check_ids(ids, len(self), self.spec)]
        if batch.ndim == 3:  # grayscale: every prototype expects RGB
            batch = np.repeat(batch[..., None], 3, axis=-1)
        return np.ascontiguousarray(batch, dtype=np.uint8)

    def labels(self, ids: np.ndarray) -> np.ndarray | None:
        if self.targets is None:
            return None
        return self.targets[_check_ids(ids, len(self), self.spec)].astype(np.int64)


def open_fashion_mnist(split: str = "train", root: str | None = None) -> ArraySource:
    """Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist``."""
    root = root or os.environ.get("COOPT_FASHION_MNIST_DIR", FASHION_MNIST_DIR)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataSourceError(f"fashion-mnist split must be 'train' or 'test', got {split!r}")
    image_file = Path(root) / f"{prefix}-images-idx3-ubyte.gz"
    label_file = Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
    if not image_file.exists():
        raise DataSourceError(
            f"Fashion-MNIST not found at {image_file}: install Debian's package "
            "`dataset-fashion-mnist` (apt-get install dataset-fashion-mnist) or set "
            "COOPT_FASHION_MNIST_DIR to a folder holding the gzipped IDX files"
        )
    spec = "fashion-mnist" if split == "train" else f"fashion-mnist:{split}"
    return ArraySource(spec, read_idx(image_file), read_idx(label_file), license=FASHION_MNIST_LICENSE,
                       citation=FASHION_MNIST_CITATION)


#: Fashion-MNIST's licence (Zalando Research publish it under the MIT licence; Debian's package
#: copyright file says Expat, the same text) and the citation its authors ask for.
FASHION_MNIST_LICENSE = "mit"
FASHION_MNIST_CITATION = """@article{xiao2017fashion,
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  author  = {Xiao, Han and Rasul, Kashif and Vollgraf, Roland},
  journal = {arXiv preprint arXiv:1708.07747},
  year    = {2017}
}"""


def source_metadata(source: ImageSource) -> dict[str, str | None]:
    """``{"license", "citation"}`` a source declares (``None`` where it says nothing: a folder
    of the user's own images, an HF dataset whose card names no licence)."""
    return {key: (getattr(source, key, None) or None) for key in ("license", "citation")}


class DecodedSource:
    """A source whose images are decoded one by one (files, Hugging Face rows): batches of
    one square size, and a sample that cannot be decoded is reported, not raised, by
    :meth:`decode`. Subclasses give ``spec``, ``image_size``, ``__len__``, ``open_image``
    (one sample as an 8-bit RGB Pillow image, see :func:`~coopt_flower.image_decoding.to_rgb`)
    and ``name_of``."""

    spec: str
    image_size: int

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def open_image(self, sample: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def name_of(self, sample: int) -> str:
        return f"sample {int(sample)}"

    def low_range_warning(self, sample: int) -> Callable[[int], None]:
        """The ``on_low_range`` callback of :func:`~coopt_flower.image_decoding.to_rgb` for
        ``sample``: warns once per source that its 16-bit images look like unscaled
        low-bit-depth data (they come out dark)."""
        def warn(bits: int) -> None:
            if not getattr(self, "_warned_low_range", False):
                self._warned_low_range = True
                log.warning("%s: 16-bit images hold values of only %d bits (e.g. %s), so they come "
                            "out dark: if this is %d-bit data stored unscaled, rescale it to the full "
                            "16-bit range (PNG's convention) or save it as 8-bit", self.spec, bits,
                            self.name_of(sample), bits)
        return warn

    def _load(self, sample: int) -> np.ndarray:
        image = self.open_image(sample)
        if image.size != (self.image_size, self.image_size):
            image = fit_square(image, self.image_size)
        return np.asarray(image, dtype=np.uint8)

    def _try_load(self, sample: int) -> np.ndarray | BadSample:
        try:
            return self._load(int(sample))
        except Exception as error:  # any decoder failure is this sample's, reported as such
            return BadSample(int(sample), self.name_of(sample), decode_reason(error))

    def images(self, ids: np.ndarray) -> np.ndarray:
        """RGB uint8 images; the first sample that cannot be decoded raises
        :class:`SampleDecodeError` naming it (see :meth:`decode` to skip such samples)."""
        pixels, bad = self.decode(ids)
        if bad:
            raise SampleDecodeError(bad[0], self.spec)
        return pixels

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, list[BadSample]]:
        """The images of ``ids`` that decode (in order) and the samples that do not."""
        ids = _check_ids(ids, len(self), self.spec)
        out = np.empty((len(ids), self.image_size, self.image_size, 3), dtype=np.uint8)
        bad, row = [], 0
        for sample in ids:
            image = self._try_load(sample)
            if isinstance(image, BadSample):
                bad.append(image)
            else:
                out[row] = image
                row += 1
        return out[:row], bad


class FolderSource(DecodedSource):
    """A folder of images: flat, or ImageFolder layout with one sub-folder per class."""

    def __init__(self, root: str | os.PathLike, image_size: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise DataSourceError(f"folder sources need an absolute path, got {str(root)!r}")
        if not self.root.is_dir():
            raise DataSourceError(f"image folder {self.root} does not exist")
        self.spec = f"folder:{self.root}"
        self.image_size = int(image_size or os.environ.get("COOPT_FOLDER_IMAGE_SIZE", 224))
        # Sorted relative paths make the ids stable across machines and runs.
        self.files = list_image_files(self.root)
        if not self.files:
            raise DataSourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        parents = sorted({p.parent for p in self.files})
        self.class_names = (
            [p.name for p in parents] if all(p != self.root for p in parents) else None
        )
        self._class_index = {name: i for i, name in enumerate(self.class_names or [])}

    def __len__(self) -> int:
        return len(self.files)

    def name_of(self, sample: int) -> str:
        """The file of ``sample``, relative to the folder (as reports name it)."""
        return self.files[int(sample)].relative_to(self.root).as_posix()

    def open_image(self, sample: int):
        path = self.files[int(sample)]
        if path.is_symlink() and not path.exists():
            raise OSError(dangling_link_reason(path))
        return open_rgb(path, self.low_range_warning(sample))

    def labels(self, ids: np.ndarray) -> np.ndarray | None:
        if self.class_names is None:
            return None
        ids = _check_ids(ids, len(self), self.spec)
        return np.array([self._class_index[self.files[i].parent.name] for i in ids], np.int64)


# ----------------------------------------------------------------------------- decoding


def decode_images(source: ImageSource, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[BadSample]]:
    """``(pixels, good ids, bad samples)`` of ``ids``: sources of files skip what does not
    decode; the others (arrays) always decode."""
    ids = np.asarray(ids, dtype=np.int64)
    if hasattr(source, "decode"):
        pixels, bad = source.decode(ids)
        if bad:
            ids = ids[~np.isin(ids, [b.sample_id for b in bad])]
        return pixels, ids, bad
    return source.images(ids), ids, []


def scan_images(source: ImageSource, ids: np.ndarray, *, workers: int = 0, batch: int = 64,
                progress: bool = True, stop_at_first: bool = False) -> list[BadSample]:
    """Decode every image of ``ids`` in parallel (threads: Pillow decodes without the GIL);
    returns the samples that do not decode, in id order.

    ``stop_at_first`` returns as soon as a bad sample is found (for ``on-bad-sample=fail``).
    Sources without files (arrays) have nothing to decode: returns ``[]`` at once.
    """
    if not hasattr(source, "decode"):
        return []
    from concurrent.futures import ThreadPoolExecutor

    ids = np.asarray(ids, dtype=np.int64)
    chunks = pages(ids, batch) if len(ids) else []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc=f"verify images ({source.spec})", unit="img", leave=False)
    bad: list[BadSample] = []
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for chunk, found in zip(chunks, pool.map(lambda chunk: source.decode(chunk)[1], chunks)):
            bad.extend(found)
            if bar is not None:
                bar.update(len(chunk))
            if stop_at_first and bad:
                pool.shutdown(wait=False, cancel_futures=True)
                break
    if bar is not None:
        bar.close()
    return sorted(bad, key=lambda b: b.sample_id)


class ScreenedSource:
    """A source whose samples were scanned before the run: :attr:`bad_samples` lists those
    that do not decode, so a round can leave them out from the start."""

    def __init__(self, source: ImageSource, bad_samples: list[BadSample]) -> None:
        self.inner, self.bad_samples, self.spec = source, list(bad_samples), source.spec

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str):  # images, labels, decode, name_of, ...
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class HFSource(DecodedSource):
    """A Hugging Face image dataset read lazily by row: nothing is decoded until asked for,
    so a split of any size (ImageNet-1K) stays on disk in its Arrow files.

    Parameters
    ----------
    dataset : datasets.Dataset
        With an image column (``img``, ``image`` or ``pixel_values``) and optionally a label
        column (``label``, ``fine_label`` or ``labels``).
    spec : str
    image_size : int, optional
        Side of the square images handed out; default: the first image's side when it is
        square (CIFAR: 32), else 224. Other sizes are resized and center-cropped to it.
    """

    def __init__(self, dataset, spec: str, image_size: int | None = None) -> None:
        self.dataset, self.spec = dataset, spec
        info = getattr(dataset, "info", None)  # the dataset card's metadata, as datasets reads it
        self.license = getattr(info, "license", None) or None
        self.citation = getattr(info, "citation", None) or None
        columns = dataset.column_names
        self.image_key = next((k for k in ("img", "image", "pixel_values") if k in columns), None)
        if self.image_key is None:
            raise DataSourceError(f"{spec} has no image column (columns: {columns})")
        self.label_key = next((k for k in ("label", "fine_label", "labels") if k in columns), None)
        if image_size is None and len(dataset):
            width, height = self.open_image(0).size
            image_size = width if width == height else 224
        self.image_size = int(image_size or 224)

    def __len__(self) -> int:
        return len(self.dataset)

    def open_image(self, sample: int):
        return to_rgb(self.dataset[int(sample)][self.image_key], self.low_range_warning(sample))

    def labels(self, ids: np.ndarray) -> np.ndarray | None:
        if self.label_key is None:
            return None
        ids = _check_ids(ids, len(self), self.spec)
        return np.asarray(self.dataset.select_columns([self.label_key])[ids][self.label_key], np.int64)


def open_hf_dataset(name: str, split: str = "train") -> HFSource:
    """A Hugging Face image dataset through flwr-datasets (needs the network once), read lazily."""
    try:
        from flwr_datasets import FederatedDataset
        from flwr_datasets.partitioner import IidPartitioner
    except ImportError as error:  # pragma: no cover - depends on the install
        raise DataSourceError("hf: sources need `pip install flwr-datasets`") from error
    # One partition = the whole split; CoOpt shards by sample id itself so that the platform
    # controls which participant holds what.
    fds = FederatedDataset(dataset=name, partitioners={split: IidPartitioner(num_partitions=1)})
    return HFSource(fds.load_partition(0, split), f"hf:{name}:{split}")


# ----------------------------------------------------------------------------- dispatch

#: Every data source form, by prefix; each value opens the source from the spec's body.
DATA_SOURCES: Registry[Callable[[str], ImageSource]] = Registry("data source", error=DataSourceError)


@DATA_SOURCES.register(
    "fashion-mnist", prefix=True, body_required=False, forms=("fashion-mnist[:train|test]",)
)
def _open_fashion_mnist_spec(split: str) -> ArraySource:
    return open_fashion_mnist(split or "train")


DATA_SOURCES.add("folder", FolderSource, prefix=True, forms=("folder:/absolute/path/to/images",))


@DATA_SOURCES.register("hf", prefix=True, forms=("hf:<dataset-name>[:split]",))
def _open_hf_spec(body: str) -> HFSource:
    name, _, split = body.partition(":")
    return open_hf_dataset(name, split or "train")


#: The built-in forms, for messages (the registry lists forms registered later, too).
SOURCE_FORMS = tuple(DATA_SOURCES.forms())


@functools.lru_cache(maxsize=8)
def open_source(spec: str) -> ImageSource:
    """Open the image source named by ``spec`` (cached per process).

    Raises
    ------
    DataSourceError
        For an unknown form or missing data, with the forms that exist.
    """
    return DATA_SOURCES.create(spec)


# ----------------------------------------------------------------------------- sharding


def select_samples(num_available: int, num_samples: int, seed: int) -> np.ndarray:
    """Sorted ids of the samples a run works on: all of them, or a seeded random subset."""
    if num_samples < 0:
        raise ValueError(f"num-samples must be >= 0 (0 = all), got {num_samples}")
    if num_samples == 0 or num_samples >= num_available:
        return np.arange(num_available, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x5A3D])
    return np.sort(rng.choice(num_available, size=num_samples, replace=False)).astype(np.int64)


def select_shared_subset(ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The shared subset S: ``size`` ids every participant encodes (seeded, sorted)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not 2 <= size <= len(ids):
        raise ValueError(f"shared-size must be in [2, {len(ids)}], got {size}")
    rng = np.random.default_rng([int(seed), 0x5EA5ED])
    return np.sort(rng.choice(ids, size=size, replace=False))


def pages(ids: np.ndarray, page_size: int) -> list[np.ndarray]:
    """Consecutive pages of at most ``page_size`` ids."""
    if page_size < 1:
        raise ValueError(f"page size must be >= 1, got {page_size}")
    return [ids[start: start + page_size] for start in range(0, len(ids), page_size)]
