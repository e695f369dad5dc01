import gzip

import numpy as np
import pytest

from coopt_flower.data import (
    DataSourceError, FolderSource, open_fashion_mnist, open_source, pages,
    read_idx, select_samples, select_shared_subset,
)
from coopt_flower.partitions import partition_iid


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", pixels)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("COOPT_FASHION_MNIST_DIR", str(tmp_path))
    return pixels, labels


def test_fashion_mnist_reads_idx_as_rgb(fake_fashion):
    pixels, labels = fake_fashion
    source = open_fashion_mnist("train")
    batch = source.images(np.array([3, 0]))
    assert batch.shape == (2, 28, 28, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[0, ..., 1], pixels[3])
    assert list(source.labels(np.array([3, 0]))) == [3, 0]
    with pytest.raises(DataSourceError, match=r"\[0, 12\)"):
        source.images(np.array([12]))


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("COOPT_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataSourceError, match="dataset-fashion-mnist"):
        open_fashion_mnist()


def test_truncated_idx_is_refused(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataSourceError, match="truncated"):
        read_idx(path)


def test_unknown_source_lists_forms():
    with pytest.raises(DataSourceError, match="folder:/absolute"):
        open_source("imagenet-please")


def test_folder_source_imagefolder_layout(tmp_path):
    from PIL import Image

    for cls, color in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40 + i * 10, 30), (color, color, color)).save(tmp_path / cls / f"{i}.png")
    source = FolderSource(tmp_path, image_size=24)
    assert len(source) == 4 and source.class_names == ["cat", "dog"]
    batch = source.images(np.arange(4))
    assert batch.shape == (4, 24, 24, 3)
    assert list(source.labels(np.arange(4))) == [0, 0, 1, 1]
    assert batch[0].mean() < 50 < batch[3].mean()


def test_folder_source_needs_absolute_existing_path(tmp_path):
    with pytest.raises(DataSourceError, match="absolute"):
        FolderSource("relative/dir")
    with pytest.raises(DataSourceError, match="no images"):
        FolderSource(tmp_path)


def test_partition_is_non_overlapping_and_complete():
    ids = select_samples(1000, 103, seed=3)
    shards = partition_iid(ids, 4, seed=3)
    merged = np.concatenate(shards)
    assert sorted(merged.tolist()) == ids.tolist()
    assert len(set(merged.tolist())) == len(merged)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(shards, partition_iid(ids, 4, seed=3)))
    with pytest.raises(ValueError, match="fewer participants"):
        partition_iid(ids[:3], 4, seed=0)


def test_select_samples_and_shared_subset_are_seeded():
    assert np.array_equal(select_samples(50, 0, 0), np.arange(50))
    a, b = select_samples(1000, 10, 1), select_samples(1000, 10, 2)
    assert len(a) == 10 and not np.array_equal(a, b)
    shared = select_shared_subset(a, 4, seed=0)
    assert set(shared) <= set(a) and np.array_equal(shared, select_shared_subset(a, 4, seed=0))
    with pytest.raises(ValueError, match="shared-size"):
        select_shared_subset(a, 11, 0)


def test_pages_cover_in_order():
    ids = np.arange(10)
    assert [p.tolist() for p in pages(ids, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_hf_source_reads_rows_lazily_and_hands_out_one_size():
    """An hf: split is read by row (nothing decoded up front); mixed sizes come out square."""
    import datasets
    from PIL import Image

    from coopt_flower.data import HFSource

    sizes = [(32, 32), (40, 24), (24, 48), (32, 32)]
    images = [Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)) for i, (w, h) in enumerate(sizes)]
    table = datasets.Dataset.from_dict({"img": images, "label": [3, 1, 4, 1]},
                                       features=datasets.Features({"img": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))
    opened = []
    original = HFSource.open_image

    class Counting(HFSource):
        def open_image(self, sample):
            opened.append(int(sample))
            return original(self, sample)

    source = Counting(table, "hf:toy:train")
    assert source.image_size == 32 and len(source) == 4 and opened == [0]  # only the first, for its size
    batch = source.images(np.array([2, 1]))
    assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.uint8
    assert (batch[0] == 20).all() and (batch[1] == 10).all() and opened == [0, 2, 1]
    assert source.labels(np.array([3, 0])).tolist() == [1, 3]
