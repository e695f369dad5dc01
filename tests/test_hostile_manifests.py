"""A shared dataset is untrusted input: a manifest that points outside its dataset, a file that
is a link out, or an array of another size or dtype is refused by every reader, in one line."""

import json
import os

import numpy as np
import pytest

from coopt_flower.data import ArraySource
from coopt_flower.dataset_format import DatasetIntegrityError, load_optimized_dataset, verify_dataset
from coopt_flower.dataset_writer import DatasetWriter
from coopt_flower.export import ExportError, export_dataset


@pytest.fixture
def dataset(tmp_path):
    ids = np.arange(6)
    with DatasetWriter(tmp_path / "ds", ids, 4, "float32") as writer:
        writer.write(ids, np.ones((6, 4), np.float32), owner=0)
        return writer.commit({"source": "test", "participants": [{"name": "p0", "prototype": "a"}]})


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.npy"
    np.save(path, np.ones((6, 4), np.float32))
    return path


def edit_manifest(dataset, change):
    path = dataset / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def readers(dataset):
    """Every way the project reads a dataset: the loader, `coopt report`'s check, the export."""
    source = ArraySource("test", np.zeros((6, 4, 4, 3), np.uint8))
    yield lambda: verify_dataset(dataset)
    yield lambda: load_optimized_dataset(dataset, source=source)
    yield lambda: load_optimized_dataset(dataset, source=source, verify=False)
    yield lambda: export_dataset(dataset, dataset.parent / "export")


def refused(dataset, match):
    for read in readers(dataset):
        with pytest.raises((DatasetIntegrityError, ExportError), match=match):
            read()


def test_an_absolute_path_in_the_manifest_is_refused(dataset, secret):
    def point_out(m):
        m["files"][str(secret)] = {"sha256": "0" * 64}
    edit_manifest(dataset, point_out)
    refused(dataset, "not a plain file name inside the dataset")


def test_a_dotdot_path_in_the_manifest_is_refused(dataset, secret):
    edit_manifest(dataset, lambda m: m["files"].update({"../secret.npy": {"sha256": "0" * 64}}))
    refused(dataset, "not a plain file name inside the dataset")


def test_uploaded_images_outside_the_dataset_are_refused(dataset, secret):
    edit_manifest(dataset, lambda m: m.update(local_sources=[{
        "participant": "p0", "prototype": "a", "spec": "folder:/x", "first_id": 6, "count": 1,
        "images": str(secret)}]))
    refused(dataset, "not a plain file name")


def test_a_data_file_that_is_a_symlink_out_of_the_dataset_is_refused(dataset, secret):
    (dataset / "targets.npy").unlink()
    os.symlink(secret, dataset / "targets.npy")
    refused(dataset, "a link out of the dataset")


def test_a_targets_file_of_another_shape_or_dtype_is_refused_before_it_is_mapped(dataset):
    np.save(dataset / "targets.npy", np.ones((6, 5), np.float32))
    with pytest.raises(DatasetIntegrityError, match=r"holds float32 \(6, 5\), the manifest says float32 \(6, 4\)"):
        load_optimized_dataset(dataset, verify=False)
    np.save(dataset / "targets.npy", np.ones((6, 4), np.float16))
    with pytest.raises(DatasetIntegrityError, match="holds float16"):
        load_optimized_dataset(dataset, verify=False)


def test_a_truncated_file_is_refused_not_mapped(dataset):
    data = (dataset / "targets.npy").read_bytes()
    (dataset / "targets.npy").write_bytes(data[:-8])
    with pytest.raises(DatasetIntegrityError, match="truncated or padded"):
        load_optimized_dataset(dataset, verify=False)
    refused(dataset, "corrupted|truncated")  # with checksums: the sha256 no longer matches


def test_a_manifest_without_the_data_files_checksums_is_refused(dataset):
    edit_manifest(dataset, lambda m: m["files"].pop("owners.npy"))
    refused(dataset, "no checksum of owners.npy")


def test_an_export_naming_a_file_outside_it_is_refused(tmp_path, secret):
    from coopt_flower.exported import EXPORT_INFO_FILE, verify_export

    export = tmp_path / "export"
    export.mkdir()
    for name in (str(secret), "../secret.npy", "sub/../../secret.npy"):
        (export / EXPORT_INFO_FILE).write_text(json.dumps({"format": "webdataset", "files": {name: "0"}}))
        with pytest.raises(DatasetIntegrityError, match="not a path inside the export"):
            verify_export(export)
    os.symlink(tmp_path, export / "up")
    (export / EXPORT_INFO_FILE).write_text(json.dumps({"format": "webdataset", "files": {"up/secret.npy": "0"}}))
    with pytest.raises(DatasetIntegrityError, match="goes through a link"):
        verify_export(export)
