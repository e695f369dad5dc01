import json

import numpy as np
import pytest

from coopt_flower.data import ArraySource
from coopt_flower.dataset_format import DatasetIntegrityError, load_optimized_dataset, read_manifest, verify_dataset
from coopt_flower.dataset_writer import DatasetWriter


def write_dataset(path, ids, targets, owners, dtype="float32", **kw):
    with DatasetWriter(path, ids, targets.shape[1], dtype, **kw) as writer:
        for owner in np.unique(owners):
            rows = owners == owner
            writer.write(ids[rows], targets[rows], owner=int(owner))
        return writer.commit({"source": "test", "participants": []}, extra_files={"report.md": "hi\n"},
                             extra_arrays={"shared_embeddings.npy": np.arange(6.0).reshape(1, 2, 3)})


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)


def test_round_trip(tmp_path, pixels):
    ids = np.array([15, 2, 7, 11, 4])
    targets = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    owners = np.array([0, 1, 0, 1, 1])
    path = write_dataset(tmp_path / "ds", ids, targets, owners)
    ds = load_optimized_dataset(path, source=ArraySource("test", pixels))
    assert len(ds) == 5 and list(ds.sample_ids) == [2, 4, 7, 11, 15]
    order = np.argsort(ids)
    for row, src in enumerate(order):
        image, target = ds[row]
        assert image.shape == (3, 8, 8) and str(image.dtype) == "torch.uint8"
        assert np.array_equal(image.permute(1, 2, 0).numpy(), pixels[ids[src]])
        assert np.allclose(target.numpy(), targets[src])
        assert ds.owners[row] == owners[src]
    manifest = read_manifest(path)
    assert manifest.num_samples == 5 and manifest.target_dim == 6
    assert (path / "report.md").read_text() == "hi\n"
    assert np.array_equal(np.load(path / "shared_embeddings.npy"), np.arange(6.0).reshape(1, 2, 3))
    assert "shared_embeddings.npy" in manifest.files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_flipped_byte_is_detected(tmp_path):
    ids = np.arange(4)
    path = write_dataset(tmp_path / "ds", ids, np.ones((4, 3), np.float32), np.zeros(4, int))
    verify_dataset(path)
    raw = bytearray((path / "targets.npy").read_bytes())
    raw[-3] ^= 0x01
    (path / "targets.npy").write_bytes(bytes(raw))
    with pytest.raises(DatasetIntegrityError, match="targets.npy is corrupted"):
        load_optimized_dataset(path)


def test_flipped_byte_in_extra_array_is_detected(tmp_path):
    path = write_dataset(tmp_path / "ds", np.arange(2), np.ones((2, 2), np.float32), np.zeros(2, int))
    raw = bytearray((path / "shared_embeddings.npy").read_bytes())
    raw[-1] ^= 0x10
    (path / "shared_embeddings.npy").write_bytes(bytes(raw))
    with pytest.raises(DatasetIntegrityError, match="shared_embeddings.npy is corrupted"):
        verify_dataset(path)


def test_incomplete_dataset_is_never_published(tmp_path):
    with pytest.raises(DatasetIntegrityError, match="never written"):
        with DatasetWriter(tmp_path / "ds", np.arange(4), 2, "float16") as writer:
            writer.write(np.array([0, 1]), np.zeros((2, 2)), owner=0)
            writer.commit({})
    assert list(tmp_path.iterdir()) == []


def test_streamed_arrays_are_published_and_checksummed(tmp_path):
    with DatasetWriter(tmp_path / "ds", np.arange(3), 2, "float32") as writer:
        writer.write(np.arange(3), np.zeros((3, 2)), owner=0)
        images = writer.create_array("local_images_p0.npy", (4, 2, 2, 3), np.uint8)
        images[1:3] = 7
        with pytest.raises(ValueError, match="new"):
            writer.create_array("local_images_p0.npy", (1,), np.uint8)
        path = writer.commit({"source": "test"})
    assert np.load(path / "local_images_p0.npy")[1:3].min() == 7
    raw = bytearray((path / "local_images_p0.npy").read_bytes())
    raw[-1] ^= 1
    (path / "local_images_p0.npy").write_bytes(bytes(raw))
    with pytest.raises(DatasetIntegrityError, match="local_images_p0.npy is corrupted"):
        verify_dataset(path)


def test_allow_missing_publishes_only_written_rows_and_lists_the_rest(tmp_path):
    with DatasetWriter(tmp_path / "ds", np.arange(10, 16), 2, "float32") as writer:
        writer.write(np.array([15, 11]), np.array([[5.0, 5.0], [1.0, 1.0]]), owner=1)
        writer.write(np.array([13]), np.array([[3.0, 3.0]]), owner=0)
        path = writer.commit({"source": "test"}, allow_missing=True)
    ds = load_optimized_dataset(path, source=ArraySource("test", np.zeros((20, 2, 2, 3), np.uint8)))
    assert ds.sample_ids.tolist() == [11, 13, 15]
    assert np.asarray(ds.targets)[:, 0].tolist() == [1.0, 3.0, 5.0]
    assert np.asarray(ds.owners).tolist() == [1, 0, 1]
    assert ds.manifest.missing_sample_ids == [10, 12, 14] and ds.manifest.num_samples == 3


def test_exception_mid_write_leaves_previous_version(tmp_path):
    path = write_dataset(tmp_path / "ds", np.arange(3), np.ones((3, 2), np.float32), np.zeros(3, int))
    before = (path / "targets.npy").read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(path, np.arange(3), 2, "float32", overwrite=True) as writer:
            writer.write(np.array([0]), np.zeros((1, 2)), owner=0)
            raise RuntimeError("boom")
    assert (path / "targets.npy").read_bytes() == before
    verify_dataset(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_writer_refuses_bad_pages(tmp_path):
    with DatasetWriter(tmp_path / "ds", np.arange(5), 3) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.array([0, 1]), np.zeros((2, 4)), owner=0)
        with pytest.raises(ValueError, match="not part of this dataset"):
            writer.write(np.array([9]), np.zeros((1, 3)), owner=0)
        writer.write(np.array([1]), np.zeros((1, 3)), owner=0)
        with pytest.raises(ValueError, match="already written"):
            writer.write(np.array([1]), np.zeros((1, 3)), owner=1)
        writer.abort()
    write_dataset(tmp_path / "x", np.arange(2), np.ones((2, 2), np.float32), np.zeros(2, int))
    with pytest.raises(FileExistsError, match="already exists"):
        DatasetWriter(tmp_path / "x", np.arange(2), 2)


def test_unknown_format_version_is_refused(tmp_path):
    path = write_dataset(tmp_path / "ds", np.arange(2), np.ones((2, 2), np.float32), np.zeros(2, int))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetIntegrityError, match="format version 99"):
        read_manifest(path)


def test_writer_memory_stays_flat_while_pages_land_all_over_the_file(tmp_path):
    """Rows of a page are scattered over the file; written-back pages must leave memory."""
    import psutil

    n, dim = 200_000, 512  # a 200 MB float16 target file
    ids = np.arange(n, dtype=np.int64)
    order = np.random.default_rng(0).permutation(n)
    process = psutil.Process()
    with DatasetWriter(tmp_path / "big", ids, dim, "float16") as writer:
        before = process.memory_full_info().uss
        peak = before
        page = np.ones((8192, dim), np.float32)
        for start in range(0, n, 8192):
            rows = np.sort(order[start:start + 8192])
            writer.write(ids[rows], page[: len(rows)], owner=0)
            peak = max(peak, process.memory_full_info().uss)
        writer.abort()
    assert (peak - before) / 2**20 < 120, f"grew by {(peak - before) / 2**20:.0f} MB"
