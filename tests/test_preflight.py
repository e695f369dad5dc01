import pytest

from coopt_flower.config import ConfigError, RunSettings
from coopt_flower.preflight import check_output_dir, preflight


def settings(tmp_path, **kw):
    base = {"prototypes": "efficientnet-lite0,onnx:open-nsfw", "num-samples": 100,
            "shared-size": 32, "target-dim": 64, "output-dir": str(tmp_path / "out")}
    base.update(kw)
    return RunSettings.from_run_config(base)


def test_good_config_passes_and_claims_the_output_dir(tmp_path):
    source = preflight(settings(tmp_path))
    assert len(source) == 60000 and (tmp_path / "out" / "run.json").exists()
    preflight(settings(tmp_path))  # the same run may come back to its directory


@pytest.mark.parametrize("override, message", [
    ({"prototypes": "efficientnet-lite0,resnet-9000"}, "prototypes: .*resnet-9000"),
    ({"data": "folder:/no/such/dir"}, "data: image folder /no/such/dir does not exist"),
    ({"data": "mnist-please"}, "data: unknown data source"),
    ({"num-samples": 70000}, "exceeds the 60000 samples"),
    ({"num-samples": 40, "shared-size": 32, "num-participants": 41}, "41 participants but only 40 samples"),
])
def test_bad_config_fails_with_one_line(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as info:
        preflight(settings(tmp_path, **override))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


def test_output_dir_of_a_different_run_is_refused(tmp_path):
    check_output_dir(settings(tmp_path))
    with pytest.raises(ConfigError, match=r"holds a different run \(seed differ\)"):
        check_output_dir(settings(tmp_path, seed=1))
    check_output_dir(settings(tmp_path, seed=1, overwrite=True))


def test_foreign_non_empty_output_dir_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not empty and holds no CoOpt run"):
        check_output_dir(settings(tmp_path))
