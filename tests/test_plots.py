"""Pictures in the reports: every round's plots are published with it, and linked."""

import json

import pytest

from coopt_flower import plots
from coopt_flower.engine import progress
from coopt_flower.data import open_source
from coopt_flower.engine import run_in_process
from tests.test_engine_round import LinearParticipant, settings

ROUND_PNGS = (plots.UNIFORM_VALUES_PNG, plots.HOLDOUT_RESIDUALS_PNG, plots.SAMPLES_PNG,
              plots.LABELS_PNG)  # Fashion-MNIST has labels
SIZE = (int(plots.FIGURE_SIZE[0] * plots.DPI), int(plots.FIGURE_SIZE[1] * plots.DPI))


@pytest.fixture(scope="module")
def fashion():
    return open_source("fashion-mnist")


def test_each_round_publishes_its_plots_next_to_the_report_and_links_them(tmp_path, fashion):
    result = run_in_process(settings(tmp_path), fashion,
                            [LinearParticipant(fashion, i) for i in range(3)])
    report = result.report_path.read_text()
    for name in ROUND_PNGS:
        data = (result.dataset_path / name).read_bytes()
        assert len(data) > 5000 and plots.png_size(data) == SIZE, name
        assert f"]({name})" in report
    assert json.loads((result.dataset_path / "report.json").read_text())["plots"] == list(ROUND_PNGS)
    assert not list(result.dataset_path.parent.glob(".round-001.tmp-*"))  # written inside, then published


def test_without_labels_there_is_no_class_histogram(tmp_path, fashion):
    result = run_in_process(settings(tmp_path), fashion, [LinearParticipant(fashion, i) for i in range(2)])
    manifest = result.manifest
    assert plots.LABELS_PNG in plots.round_plots(manifest)
    for p in manifest.participants:
        p.label_counts = None  # what a flat image folder gives
    assert list(plots.round_plots(manifest)) == list(ROUND_PNGS[:3])


def test_a_plot_that_fails_costs_the_pictures_not_the_round(tmp_path, fashion, monkeypatch):
    def broken(summary):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "round_plots", broken)
    result = run_in_process(settings(tmp_path), fashion,
                            [LinearParticipant(fashion, i) for i in range(2)])
    assert (result.dataset_path / "manifest.json").exists()
    assert not list(result.dataset_path.glob("*.png")) and "![" not in result.report_path.read_text()


@pytest.mark.parametrize("probed", [True, False])
def test_the_summary_across_rounds_has_its_plot(tmp_path, probed):
    participants = [{"name": "p0", "prototype": "a", "uniform_value": -3.2},
                    {"name": "p1", "prototype": "onnx:b", "uniform_value": -3.5}]
    state = {"refinement": "switch", "rounds": {
        "1": {"reference": "p1", "reference_prototype": "onnx:b", "participants": participants,
              "student_in": None, "student": {"probe_accuracy": 0.71, "train_seconds": 3.0} if probed else None},
        "2": {"reference": "student", "reference_prototype": "student:ab", "participants": participants,
              "student_in": {"digest": "ab", "uniform_value": -3.6},
              "student": {"probe_accuracy": 0.74, "train_seconds": 3.0} if probed else None},
    }}
    progress.write_summary(tmp_path, state)
    data = (tmp_path / plots.ROUNDS_PNG).read_bytes()
    assert len(data) > 5000 and plots.png_size(data) == SIZE
    assert f"]({plots.ROUNDS_PNG})" in (tmp_path / progress.SUMMARY_MD).read_text()
    assert [plots.reference_value(e) for e in state["rounds"].values()] == [-3.5, -3.6]


def test_png_size_refuses_what_is_not_a_png():
    with pytest.raises(ValueError, match="not a PNG"):
        plots.png_size(b"GIF89a" + bytes(30))


def test_one_round_without_a_student_draws_no_plot_across_rounds(tmp_path):
    participants = [{"name": "p0", "prototype": "a", "uniform_value": -3.2}]
    state = {"refinement": "static", "rounds": {
        "1": {"reference": "p0", "reference_prototype": "a", "participants": participants,
              "student_in": None, "student": None}}}
    progress.write_summary(tmp_path, state)
    assert not (tmp_path / plots.ROUNDS_PNG).exists()
    assert "![" not in (tmp_path / progress.SUMMARY_MD).read_text()
    state["rounds"]["1"]["student"] = {"probe_accuracy": 0.7, "train_seconds": 1.0}  # a probed student: drawn
    progress.write_summary(tmp_path, state)
    assert (tmp_path / plots.ROUNDS_PNG).exists()
