"""Train from a webdataset export as a stream: shards read front to back, never materialised.

:class:`coopt_flower.exported.WebDatasetExport` reads an export by random access (an index of
every member's offset, one seek per item): simple, but it needs local files and an index that
grows with the dataset. :class:`StreamingExport` reads the same shards the way webdataset's
users read them at ImageNet scale: each shard is one sequential stream (a local file, a
``pipe:COMMAND`` whose standard output is the tar, or an ``http(s)://`` URL), samples go
through a bounded shuffle buffer, and the shards are split between torchrun processes (rank)
and, within one, DataLoader workers. Memory is the buffer, not the dataset.

Per epoch (``set_epoch``) the shard order is shuffled from ``(seed, epoch)``, shard ``i`` of that
order goes to rank ``i % world_size``, and within a rank to worker ``j % num_workers``; so every
sample is seen once per epoch over all processes, and the same seed gives the same order. Each
rank trains on its own stream (unlike the memory-map path, where every process walks the global
batch order), so all ranks must take the same number of steps: :func:`rank_samples` gives each
rank's count from the export's shard counts, and the training loop stops every rank after the
smallest rank's full batches.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from coopt_flower.dataset_format import DatasetIntegrityError
from coopt_flower.export import EXPORT_INFO_FILE, TARGET_EXTENSION

#: Samples held in the shuffle buffer by default (webdataset's examples use 1,000-10,000).
DEFAULT_SHUFFLE_BUFFER = 2000
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


@dataclass(frozen=True)
class StreamSpec:
    """Where an export's shards are and what they hold."""

    urls: tuple[str, ...]
    image_extension: str
    num_samples: int | None
    shard_samples: tuple[int, ...] | None  # per shard, when the export recorded it

    @classmethod
    def from_export(cls, path: str | Path) -> StreamSpec:
        """The spec of a ``coopt export --format webdataset`` directory (its ``coopt_export.json``)."""
        from coopt_flower.exported import export_file

        root = Path(path)
        info_file = root / EXPORT_INFO_FILE
        if not info_file.is_file():
            raise DatasetIntegrityError(f"{root}: no {EXPORT_INFO_FILE}; stream a `coopt export --format "
                                        "webdataset` directory, or give the shard URLs")
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if info.get("format") != "webdataset":
            raise DatasetIntegrityError(f"{root} is a {info.get('format')!r} export; only webdataset "
                                        "exports stream")
        urls = tuple(str(export_file(root, name)) for name in info["shards"])
        counts = info.get("shard_samples")
        return cls(urls, info.get("image_extension", "png"), int(info["num_samples"]),
                   tuple(int(c) for c in counts) if counts else None)

    @classmethod
    def from_urls(cls, urls: str | Sequence[str], image_extension: str = "png") -> StreamSpec:
        """Shards given by URL (:func:`expand_urls`); their sample counts are learnt by reading."""
        listed = expand_urls(urls) if isinstance(urls, str) else [str(u) for u in urls]
        return cls(tuple(listed), image_extension, None, None)


def expand_urls(text: str) -> list[str]:
    """URLs separated by ``::`` (webdataset's separator: a pipe command may hold commas), each
    ``{a..b}`` range expanded (zero-padded to ``a``'s width) as webdataset reads shard lists:
    ``data-{000000..000002}.tar`` -> three names."""
    urls: list[str] = []
    for part in (p.strip() for p in text.split("::")):
        match = _RANGE.search(part)
        if not part:
            continue
        if match is None:
            urls.append(part)
            continue
        first, last = match.group(1), match.group(2)
        if int(last) < int(first):
            raise ValueError(f"shard range {match.group(0)} runs backwards")
        head, tail = part[:match.start()], part[match.end():]
        urls += [u for i in range(int(first), int(last) + 1) for u in expand_urls(f"{head}{i:0{len(first)}d}{tail}")]
    if not urls:
        raise ValueError("no shard URLs given")
    return urls


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream of ``url``: ``pipe:COMMAND`` (its standard output), an
    ``http(s)://`` URL, or a local path (``file://`` or plain)."""
    if url.startswith("pipe:"):
        return PipeStream(url[len("pipe:"):])
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url)  # noqa: S310 (the user's own URL)
    return open(url[len("file://"):] if url.startswith("file://") else url, "rb")


class PipeStream:
    """The standard output of a ``pipe:`` command, which knows how the command ended.

    A command that fails (a download's 404, a missing file) may still have written a whole tar,
    or none: :meth:`check_exit` turns a non-zero status into an error naming the command and the
    end of what it wrote on stderr (kept in a temporary file, so a chatty command cannot block).
    """

    def __init__(self, command: str) -> None:
        import tempfile

        self.command = command
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=self.stderr)

    def read(self, size: int = -1) -> bytes:
        return self.proc.stdout.read(size)

    def check_exit(self, timeout: float | None = None) -> None:
        """Raise :class:`DatasetIntegrityError` if the command exited non-zero (after
        ``timeout`` seconds a command still running is left to :meth:`close`)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if code != 0:
            self.stderr.seek(0)
            said = self.stderr.read()[-400:].decode(errors="replace").strip()
            raise DatasetIntegrityError(f"pipe:{self.command}: the command exited with status {code}"
                                        + (f" ({said.splitlines()[-1]})" if said else "")
                                        + "; fix the command or fetch the shard again")

    def close(self) -> None:
        if self.proc.poll() is None:  # the reader stopped early: the command's output is not wanted
            self.proc.kill()
        self.proc.stdout.close()
        self.proc.wait()
        self.stderr.close()


def tar_samples(stream: IO[bytes], url: str, image_extension: str) -> Iterator[tuple[int, bytes, bytes]]:
    """``(sample id, image bytes, target bytes)`` per sample of one tar stream, members grouped
    by key as webdataset writes them (consecutive); a sample lacking a part, or a tar that ends
    early or is not one, is a :class:`DatasetIntegrityError` naming the shard."""
    key, parts = None, {}

    def finish() -> tuple[int, bytes, bytes]:
        if image_extension not in parts or TARGET_EXTENSION not in parts:
            raise DatasetIntegrityError(f"{url}: sample {key} lacks .{image_extension} or .{TARGET_EXTENSION}")
        return int(key), parts[image_extension], parts[TARGET_EXTENSION]

    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name_key, _, extension = member.name.partition(".")
                if name_key != key:
                    if key is not None:
                        yield finish()
                    key, parts = name_key, {}
                if extension in (image_extension, TARGET_EXTENSION):
                    handle = tar.extractfile(member)
                    parts[extension] = handle.read() if handle is not None else b""
            if isinstance(stream, PipeStream):
                stream.read()  # what follows the tar's end (padding), so that the command can exit
        if isinstance(stream, PipeStream):
            stream.check_exit()  # a failed command's tar is not trusted, even when it reads whole
        if key is not None:
            yield finish()
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(stream, PipeStream):
            stream.check_exit(timeout=5)  # a command that failed says so, not only its empty tar
        raise DatasetIntegrityError(f"{url}: not a readable tar shard ({error}); fetch or export it again") \
            from error
    finally:
        stream.close()


def decode_image(data: bytes, extension: str) -> torch.Tensor:
    """uint8 ``(3, H, W)`` from a member's bytes (the random-access reader's decoding)."""
    from coopt_flower.exported import decode_member_image

    return torch.from_numpy(np.ascontiguousarray(decode_member_image(data, extension).transpose(2, 0, 1)))


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The shards' order in ``epoch`` (a permutation drawn from ``(seed, epoch)``)."""
    order = list(range(num_shards))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def rank_shards(num_shards: int, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """The shards ``rank`` reads in ``epoch``: every ``world_size``-th of the epoch's order."""
    return shard_order(num_shards, seed, epoch)[rank::world_size]


def rank_samples(spec: StreamSpec, seed: int, epoch: int, world_size: int) -> list[int]:
    """Samples each rank streams in ``epoch`` (needs the export's per-shard counts)."""
    if spec.shard_samples is None:
        raise DatasetIntegrityError("this export does not record its shards' sample counts (exported "
                                    "before coopt-flower recorded them): export it again to stream it "
                                    "under torchrun")
    return [sum(spec.shard_samples[s] for s in rank_shards(len(spec.urls), seed, epoch, r, world_size))
            for r in range(world_size)]


class StreamingExport(IterableDataset):
    """``(image, target)`` items streamed from an export's shards (see the module docstring).

    Parameters
    ----------
    spec : StreamSpec
        The shards (:meth:`StreamSpec.from_export`, or built from URLs).
    shuffle_buffer : int
        Samples held for shuffling (0 or 1: stream order).
    seed : int
        Shard order and buffer draws come from ``(seed, epoch, rank, worker)``.
    rank, world_size : int
        This process's share of the shards.
    transform : callable, optional
        Applied to each image tensor.
    decode : bool
        False: yield only ``(sample_id, target)`` (target statistics without decoding images).
    """

    def __init__(self, spec: StreamSpec, *, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, seed: int = 0,
                 rank: int = 0, world_size: int = 1, transform: Callable | None = None,
                 decode: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle buffer must be >= 0, got {shuffle_buffer}")
        self.spec, self.shuffle_buffer, self.seed = spec, int(shuffle_buffer), int(seed)
        self.rank, self.world_size, self.transform, self.decode = rank, world_size, transform, decode
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the shard order and buffer of ``epoch`` (call before iterating it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.world_size == 1 and self.spec.num_samples is not None:
            return self.spec.num_samples
        if self.spec.shard_samples is None:  # TypeError: what len() of an unsized stream raises
            raise TypeError("the stream's length is unknown until it is read (shards given by URL)")
        return rank_samples(self.spec, self.seed, self.epoch, self.world_size)[self.rank]

    def _my_shards(self) -> tuple[list[int], int]:
        shards = rank_shards(len(self.spec.urls), self.seed, self.epoch, self.rank, self.world_size)
        worker = get_worker_info()
        if worker is None:
            return shards, 0
        return shards[worker.id::worker.num_workers], worker.id + 1

    def _raw(self, shards: Sequence[int]) -> Iterator[tuple[int, bytes, bytes]]:
        for shard in shards:
            url = self.spec.urls[shard]
            try:
                stream = open_url(url)
            except OSError as error:
                raise DatasetIntegrityError(f"{url}: shard cannot be opened ({error.strerror or error})") from error
            yield from tar_samples(stream, url, self.spec.image_extension)

    def __iter__(self) -> Iterator[Any]:
        shards, worker = self._my_shards()
        rng = random.Random(hash((self.seed, self.epoch, self.rank, worker)))
        samples = shuffled(self._raw(shards), self.shuffle_buffer, rng)
        for sample_id, image, target in samples:
            target_t = torch.from_numpy(np.load(io.BytesIO(target)).astype(np.float32, copy=False))
            if not self.decode:
                yield sample_id, target_t
                continue
            image_t = decode_image(image, self.spec.image_extension)
            yield (self.transform(image_t) if self.transform else image_t), target_t


def shuffled(items: Iterator[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """``items`` through a shuffle buffer of ``buffer_size`` (each new item replaces a random held
    one, which is emitted): a bounded-memory approximation of a shuffle, exact order kept at 0/1."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer
