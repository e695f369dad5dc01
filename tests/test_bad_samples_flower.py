"""A real `flwr run .` over a folder with broken images: nobody is blamed, nothing is lost."""

import json

import pytest

from simulations.local_run import run_local_simulation, run_succeeded
from tests.test_bad_samples import make_folder

pytestmark = pytest.mark.slow


def test_flower_run_skips_and_lists_broken_images(tmp_path):
    folder = make_folder(tmp_path / "images", good=40)
    out = tmp_path / "out"
    config = {"prototypes": "efficientnet-lite0,efficientnet-lite0", "data": f"folder:{folder}",
              "num-samples": 0, "shared-size": 30, "image-size": 32, "target-dim": 32, "page-size": 8,
              "seed": 1, "output-dir": str(out)}
    run = run_local_simulation(config, num_supernodes=2, timeout_s=600, echo=False,
                               flwr_home=tmp_path / "flwr-home")
    assert run_succeeded(run), run.output[-3000:]
    report = json.loads((out / "round-001" / "report.json").read_text())
    assert report["failures"] == [] and report["num_samples"] == 40 and report["missing_samples"] == 0
    assert sorted(b["name"] for b in report["bad_samples"]) == ["broken/not-an-image.png", "broken/truncated.jpg"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
