"""Node-local data in a real deployment: a SuperNode's own image folder joins the dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from coopt_flower.data import FolderSource, open_source, select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from deploy.cluster import LocalCluster, marked_pids

pytestmark = pytest.mark.slow
RUN_CONFIG = {"num-samples": 60, "shared-size": 16, "image-size": 32, "target-dim": 32,
              "page-size": 20, "seed": 4, "upload-local-images": True}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    # The participant's own folder: 12 Fashion-MNIST test images, ImageFolder layout.
    folder = tmp_path_factory.mktemp("node-images")
    test = open_source("fashion-mnist:test")
    for i in range(12):
        label = int(test.labels(np.array([i]))[0])
        (folder / f"class{label}").mkdir(exist_ok=True)
        Image.fromarray(test.images(np.array([i]))[0]).save(folder / f"class{label}" / f"img{i:02d}.png")
    expected = FolderSource(folder).images(np.arange(12))

    out = tmp_path_factory.mktemp("out")
    workdir = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(2, [
        {"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": 0},
        {"prototype": "onnx:open-nsfw", "device": "cpu", "partition-id": 1,
         "local-data": f"folder:{folder}"},
    ], workdir=workdir)
    try:
        cluster.start()
        run = cluster.run_app({**RUN_CONFIG, "output-dir": str(out)}, timeout_s=600)
    finally:
        cluster.stop()
    assert marked_pids(workdir) == []
    # The node's folder goes away: the dataset must not need it any more.
    shutil.rmtree(folder)
    return run, out / "round-001", expected


def test_local_images_become_part_of_the_dataset(local_run):
    run, path, expected = local_run
    assert run.returncode == 0, run.output[-4000:]
    ds = load_optimized_dataset(path)  # checksums cover the uploaded images too
    platform = select_samples(60000, 60, seed=4)
    local_ids = np.arange(60000, 60012)
    assert ds.sample_ids.tolist() == platform.tolist() + local_ids.tolist()
    owners = np.asarray(ds.owners)
    assert (owners[:60] == 0).all() and (owners[60:] == 1).all()
    [entry] = ds.manifest.local_sources
    assert entry.first_id == 60000 and entry.count == 12 and entry.participant == "p1"
    assert entry.images in ds.manifest.files


def test_uploaded_images_make_the_dataset_self_contained(local_run):
    _, path, expected = local_run
    ds = load_optimized_dataset(path)
    for row in range(60, 72):
        image, target = ds[row]
        assert np.array_equal(image.permute(1, 2, 0).numpy(), expected[row - 60])
        assert np.isfinite(target.numpy()).all()
    report = json.loads((path / "report.json").read_text())
    local = [p for p in report["participants"] if p["local_samples"]]
    assert [p["num_samples"] for p in local] == [12]
