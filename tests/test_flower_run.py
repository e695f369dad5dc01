"""A real `flwr run .` in local simulation: the whole protocol, end to end."""

import hashlib
import json

import numpy as np
import pytest

from coopt_flower.data import open_source, select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from simulations.check_identical import TINY_RUN_CONFIG, compare, run_tiny
from simulations.local_run import run_pids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flower_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("coopt-out")
    # Two prototypes, 1280-d and 1024-d; 200 samples in pages of 40.
    config = dict(TINY_RUN_CONFIG, **{"output-dir": str(out)})
    run, path = run_tiny(out, tmp_path_factory.mktemp("flwr-home"))
    return run, path, config


def test_run_finishes_and_leaves_no_superlink(flower_run):
    run, path, _ = flower_run
    assert run.returncode == 0, run.output[-3000:]
    assert path.is_dir(), run.output[-3000:]
    assert run_pids(run.flwr_home) == []  # SuperLink and SuperExec stopped


def test_every_sample_appears_exactly_once(flower_run):
    _, path, config = flower_run
    ds = load_optimized_dataset(path)  # verifies checksums
    expected = select_samples(60000, config["num-samples"], config["seed"])
    assert np.array_equal(ds.sample_ids, expected)
    assert len(np.unique(ds.sample_ids)) == len(ds) == 200
    participants = ds.manifest.participants
    counts = np.bincount(np.asarray(ds.owners), minlength=len(participants))
    assert counts.tolist() == [p.num_samples for p in participants] == [100, 100]
    assert sorted(p.output_dim for p in participants) == [1024, 1280]
    assert np.isfinite(np.asarray(ds.targets, np.float32)).all()


def test_shared_subset_is_the_same_for_every_participant(flower_run):
    _, path, _ = flower_run
    manifest = json.loads((path / "manifest.json").read_text())
    shared_ids = np.array(manifest["shared_ids"])
    pixels = open_source("fashion-mnist").images(shared_ids)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    assert len(shared_ids) == 32
    assert [p["shared_pixels_sha256"] for p in manifest["participants"]] == [digest, digest]


def test_report_names_the_reference_and_targets_are_aligned_to_it(flower_run):
    _, path, _ = flower_run
    summary = json.loads((path / "report.json").read_text())
    values = {p["name"]: p["uniform_value"] for p in summary["participants"]}
    reference = min(values, key=values.get)
    ref = next(p for p in summary["participants"] if p["name"] == reference)
    assert summary["reference"] == reference
    report = (path / "report.md").read_text()
    assert f"**{reference}** (`{ref['prototype']}`)" in report
    for p in summary["participants"]:
        assert p["prototype"] in report

    # Rows the reference itself encoded pass through unaligned: on the shared ids it owns,
    # the merged targets equal the shared-subset embeddings it sent.
    ds = load_optimized_dataset(path)
    shared_ids = np.array(ds.manifest.shared_ids)
    embeddings = np.load(path / "shared_embeddings.npy")
    index = [p["name"] for p in summary["participants"]].index(reference)
    rows = np.searchsorted(ds.sample_ids, shared_ids)
    owned = np.asarray(ds.owners)[rows] == index
    assert owned.any()
    merged = np.asarray(ds.targets[rows[owned]], np.float32)
    assert np.allclose(merged, embeddings[index][owned], rtol=2e-3, atol=2e-3)


def test_dataset_is_byte_identical_to_the_recorded_run(flower_run):
    """The restructured code writes the very bytes the recorded run wrote (targets, ids, owners)."""
    _, path, _ = flower_run
    assert compare(path) == []
