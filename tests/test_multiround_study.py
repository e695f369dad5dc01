"""The multi-round study's config: optional keys take the app's value, bad keys are named."""

import pytest

from simulations.multiround_study import DEFAULT_CONFIG, load_config


def test_committed_configs_load_and_the_student_size_is_optional(tmp_path):
    assert load_config(DEFAULT_CONFIG)["student_image_size"] == 0  # the app's: the data's size
    budget = load_config(DEFAULT_CONFIG.parent / "multiround-budget.yaml")
    assert budget["student_image_size"] == 32 and budget["num_samples"] == 10000
    assert budget["policies"] == ["switch", "static"]


def test_unknown_and_missing_keys_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text() + "studnet_image_size: 32\n")
    with pytest.raises(ValueError, match="'studnet_image_size'.*'student_image_size'"):
        load_config(bad)
    cut = tmp_path / "cut.yaml"
    cut.write_text("rounds: 2\n")
    with pytest.raises(ValueError, match="missing study keys .*num_samples"):
        load_config(cut)
