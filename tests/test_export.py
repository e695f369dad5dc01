"""Export of a round as a self-contained dataset (coopt_flower.export, coopt_flower.exported)."""

import glob
import json
import shutil
import tracemalloc

import numpy as np
import pytest

from coopt_flower.config import RunSettings
from coopt_flower.data import open_source
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.export import ExportError, ExportOptions, export_dataset, push_to_hub
from coopt_flower.exported import open_dataset
from coopt_flower.engine import run_in_process
from tests.test_engine_round import LinearParticipant

PROTOTYPES = ["fake-linear-0", "fake-linear-1", "fake-linear-2"]


def make_round(out, num_samples=120):
    """A small round directory, made in-process (no Flower)."""
    source = open_source("fashion-mnist")
    settings = RunSettings.from_run_config({
        "prototypes": ",".join(PROTOTYPES), "num-samples": num_samples, "shared-size": 32,
        "target-dim": 16, "page-size": 50, "seed": 3, "output-dir": str(out)})
    participants = [LinearParticipant(source, i, name_prefix="fake-linear") for i in range(3)]
    return run_in_process(settings, source, participants).dataset_path


@pytest.fixture(scope="module")
def round_dir(tmp_path_factory):
    return make_round(tmp_path_factory.mktemp("round"))


@pytest.fixture(scope="module")
def reference(round_dir):
    """(images uint8 (N, H, W, 3), targets float32 (N, n), sample ids, owners) from the round's loader."""
    ds = load_optimized_dataset(round_dir)
    items = [ds[i] for i in range(len(ds))]
    images = np.stack([image.permute(1, 2, 0).numpy() for image, _ in items])
    targets = np.stack([target.numpy() for _, target in items])
    return images, targets, np.asarray(ds.sample_ids), np.asarray(ds.owners)


def test_hf_export_loads_with_datasets_alone_pixel_for_pixel(tmp_path, round_dir, reference):
    import datasets

    out = export_dataset(round_dir, tmp_path / "hf", ExportOptions(format="hf", image_format="png"))
    hf = datasets.load_from_disk(str(out / "arrow")).with_format("numpy")
    images, targets, ids, owners = reference
    assert len(hf) == len(ids)
    np.testing.assert_array_equal(np.stack(hf["image"]), images)
    np.testing.assert_array_equal(np.asarray(hf["target"], dtype=np.float32), targets)
    np.testing.assert_array_equal(hf["sample_id"], ids)
    np.testing.assert_array_equal(hf["owner"], owners)
    assert list(hf["prototype"]) == [PROTOTYPES[o] for o in owners]


def test_hf_export_also_loads_with_load_dataset_from_another_directory(tmp_path, round_dir, reference, monkeypatch):
    import datasets

    out = export_dataset(round_dir, tmp_path / "hf", ExportOptions(format="hf", image_format="png"))
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing of the source tree or of the round is needed
    hf = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache")).with_format("numpy")
    images, targets, ids, owners = reference
    np.testing.assert_array_equal(np.stack(hf["image"]), images)
    np.testing.assert_array_equal(np.asarray(hf["target"], dtype=np.float32), targets)
    np.testing.assert_array_equal(hf["sample_id"], ids)
    assert list(hf["prototype"]) == [PROTOTYPES[o] for o in owners]


def test_a_source_without_licence_leaves_it_for_the_publisher(tmp_path, round_dir, monkeypatch):
    from coopt_flower import data

    monkeypatch.setattr(data, "FASHION_MNIST_LICENSE", None)
    data.open_source.cache_clear()
    try:
        card = (export_dataset(round_dir, tmp_path / "hf") / "README.md").read_text()
    finally:
        data.open_source.cache_clear()
    assert "license: unknown" in card and "To be filled in by the publisher" in card


def test_webdataset_export_loads_with_webdataset_pixel_for_pixel(tmp_path, round_dir, reference):
    wds = pytest.importorskip("webdataset")
    out = export_dataset(round_dir, tmp_path / "wds",
                         ExportOptions(format="webdataset", image_format="png", samples_per_shard=50))
    shards = sorted(glob.glob(str(out / "*.tar")))
    assert len(shards) == 3  # 120 samples, 50 per shard
    rows = list(wds.WebDataset(shards, shardshuffle=False).decode("rgb8").to_tuple("png", "target.npy", "json"))
    images, targets, ids, owners = reference
    np.testing.assert_array_equal(np.stack([r[0] for r in rows]), images)
    np.testing.assert_array_equal(np.stack([r[1] for r in rows]).astype(np.float32), targets)
    assert [r[2]["sample_id"] for r in rows] == ids.tolist()
    assert [r[2]["owner"] for r in rows] == owners.tolist()


@pytest.mark.parametrize("fmt", ["hf", "webdataset"])
@pytest.mark.parametrize("image_format", ["png", "raw", "jpeg"])
def test_open_dataset_gives_the_rounds_items(tmp_path, round_dir, reference, fmt, image_format):
    """What `coopt train` reads from an export equals what it reads from the round."""
    out = export_dataset(round_dir, tmp_path / "x", ExportOptions(format=fmt, image_format=image_format,
                                                                  samples_per_shard=50))
    ds = open_dataset(out)
    images, targets, ids, _ = reference
    got = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(len(ds))])
    np.testing.assert_array_equal(np.stack([ds[i][1].numpy() for i in range(len(ds))]), targets)
    np.testing.assert_array_equal(np.asarray(ds.sample_ids), ids)
    np.testing.assert_array_equal(np.asarray(ds.targets[10:20], dtype=np.float32), targets[10:20])
    if image_format == "jpeg":  # lossy, but close
        assert np.abs(got.astype(int) - images).mean() < 2.0
    else:
        np.testing.assert_array_equal(got, images)


def test_the_export_is_deterministic(tmp_path, round_dir):
    options = ExportOptions(format="webdataset", samples_per_shard=50)
    a = export_dataset(round_dir, tmp_path / "a", options)
    b = export_dataset(round_dir, tmp_path / "b", options)
    assert (json.loads((a / "coopt_export.json").read_text())["files"]
            == json.loads((b / "coopt_export.json").read_text())["files"])
    assert (a / "README.md").read_text() == (b / "README.md").read_text()


def test_the_card_lists_every_prototype_and_the_provenance(tmp_path, round_dir):
    out = export_dataset(round_dir, tmp_path / "hf")
    card = (out / "README.md").read_text()
    manifest = json.loads((round_dir / "manifest.json").read_text())
    for p in manifest["participants"]:
        row = next(line for line in card.splitlines() if line.startswith(f"| {p['name']}"))
        assert f"`{p['prototype']}`" in row
        assert f"{p['uniform_value']:.4f}" in row and f"{p['holdout_residual']:.3f}" in row
    assert f"**{manifest['reference']}** (`{manifest['reference_prototype']}`)" in card
    assert "seed 3" in card and "`fashion-mnist`" in card and "2505.14117" in card
    # The licence and citation come from the source's metadata (Fashion-MNIST: MIT, Xiao et al.).
    assert card.startswith("---\nlicense: mit\n") and "## Licence" in card and "under its licence, `mit`" in card
    assert "@article{xiao2017fashion" in card
    for name, meta in manifest["files"].items():
        assert f"`{name}`: `{meta['sha256']}`" in card
    info = json.loads((out / "coopt_export.json").read_text())
    for name, digest in info["files"].items():
        assert f"`{name}`: `{digest}`" in card
    assert json.loads((out / "coopt_manifest.json").read_text()) == manifest


def test_a_round_that_fails_verification_is_refused_naming_the_file(tmp_path, round_dir):
    broken = tmp_path / "broken"
    shutil.copytree(round_dir, broken)
    targets = np.load(broken / "targets.npy")
    targets[0, 0] += 1
    np.save(broken / "targets.npy", targets)
    with pytest.raises(ExportError, match=r"refusing to export .*targets\.npy is corrupted"):
        export_dataset(broken, tmp_path / "out")
    (broken / "owners.npy").unlink()
    np.save(broken / "targets.npy", np.load(round_dir / "targets.npy"))
    with pytest.raises(ExportError, match=r"owners\.npy is missing"):
        export_dataset(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_a_non_empty_output_is_refused_unless_overwrite(tmp_path, round_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty; choose an empty folder or pass --overwrite"):
        export_dataset(round_dir, out)
    assert (out / "precious.txt").read_text() == "mine"
    export_dataset(round_dir, out, ExportOptions(overwrite=True))
    assert not (out / "precious.txt").exists() and (out / "README.md").is_file()
    with pytest.raises(ExportError, match="overlaps the round"):
        export_dataset(round_dir, round_dir / "export", ExportOptions(overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or cache left


def test_an_empty_output_folder_is_used(tmp_path, round_dir):
    (tmp_path / "empty").mkdir()
    assert (export_dataset(round_dir, tmp_path / "empty") / "README.md").is_file()


def test_bad_options_are_refused_before_any_work(tmp_path, round_dir):
    with pytest.raises(ExportError, match="export format must be one of"):
        export_dataset(round_dir, tmp_path / "x", ExportOptions(format="parquet"))
    with pytest.raises(ExportError, match="image format must be one of"):
        export_dataset(round_dir, tmp_path / "x", ExportOptions(image_format="gif"))
    assert not (tmp_path / "x").exists()


def test_webdataset_export_memory_is_flat_in_the_dataset_size(tmp_path):
    """Peak traced memory of the export does not grow with the number of samples."""
    peaks = []
    for n in (200, 2000):
        round_dir = make_round(tmp_path / f"r{n}", num_samples=n)
        tracemalloc.start()
        export_dataset(round_dir, tmp_path / f"e{n}", ExportOptions(format="webdataset", samples_per_shard=500))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 10x the samples: the images alone would be 10x (2000 x 28 x 28 x 3 = 4.7 MB vs 0.47 MB).
    assert peaks[1] < 1.5 * peaks[0] + 1_000_000, peaks


@pytest.mark.parametrize("fmt", ["hf", "webdataset"])
def test_push_to_hub_uploads_the_export(tmp_path, round_dir, monkeypatch, fmt):
    """The hub calls, monkeypatched (no network here)."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("api", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["repo_type"]))

        def upload_folder(self, folder_path, repo_id, repo_type, ignore_patterns=None):
            calls.append(("upload_folder", folder_path, repo_id, ignore_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = export_dataset(round_dir, tmp_path / fmt, ExportOptions(format=fmt))
    url = push_to_hub(out, "someone/coopt-fmnist", token="t")
    assert url == "https://huggingface.co/datasets/someone/coopt-fmnist"
    assert calls[:2] == [("api", "t"), ("create_repo", "someone/coopt-fmnist", "dataset")]
    # hf: the Parquet shards and the card are the Hub's layout; the Arrow copy stays home.
    assert calls[2:] == [("upload_folder", str(out), "someone/coopt-fmnist", ["arrow/*"] if fmt == "hf" else None)]


def test_the_training_cli_trains_on_an_export(tmp_path, round_dir, capsys):
    from coopt_flower.student_training import main

    out = export_dataset(round_dir, tmp_path / "wds", ExportOptions(format="webdataset", samples_per_shard=50))
    assert main(["--dataset", str(out), "--out", str(tmp_path / "student"), "--epochs", "1",
                 "--batch-size", "32", "--device", "cpu", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["losses"]) == 1 and (tmp_path / "student" / "last.pt").is_file()
