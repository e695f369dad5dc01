import pytest

from coopt_flower.config import ConfigError, RunSettings
from coopt_flower.preflight import check_output_dir, claim_output_dir, preflight


def settings(tmp_path, **kw):
    base = {"prototypes": "efficientnet-lite0,onnx:open-nsfw", "num-samples": 100,
            "shared-size": 32, "target-dim": 64, "output-dir": str(tmp_path / "out")}
    base.update(kw)
    return RunSettings.from_run_config(base)


def test_good_config_passes_and_writes_nothing_until_the_run_claims_the_output_dir(tmp_path):
    source = preflight(settings(tmp_path))
    assert len(source) == 60000 and not (tmp_path / "out").exists()  # as it found it
    claim_output_dir(settings(tmp_path))  # what the run does before its first data
    assert (tmp_path / "out" / "run.json").exists()
    preflight(settings(tmp_path))  # the same run may come back to its directory


def test_a_run_refused_by_preflight_leaves_no_claim_so_the_retry_is_not_a_different_run(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from coopt_flower.errors import OutputDirError

    (tmp_path / "out").mkdir()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 0, 1 << 20))  # 1 MiB free
    with pytest.raises(OutputDirError, match="MiB free"):
        preflight(settings(tmp_path, **{"num-samples": 60000, "target-dim": 512}))
    assert list((tmp_path / "out").iterdir()) == []  # no run.json claimed by the refused run
    monkeypatch.undo()
    preflight(settings(tmp_path, **{"target-dim": 32}))  # the obvious retry is not "a different run"


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
    claim_output_dir(settings(tmp_path))
    with pytest.raises(ConfigError, match=r"holds a different run \(seed differ\)"):
        check_output_dir(settings(tmp_path, seed=1))
    check_output_dir(settings(tmp_path, seed=1, overwrite=True))


def test_foreign_non_empty_output_dir_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not empty and holds no CoOpt run"):
        check_output_dir(settings(tmp_path))
