import pytest

from coopt_flower.config import ConfigError, RunSettings, split_specs


def test_parses_flower_run_config():
    s = RunSettings.from_run_config({
        "prototypes": "efficientnet-lite0, onnx:open-nsfw", "num-samples": 100,
        "shared-size": 32, "target-dim": 64, "output-dir": "/tmp/x", "page-size": 0,
        "max-message-mb": 1.0, "unrelated-key": 1,
    })
    assert s.prototypes == ["efficientnet-lite0", "onnx:open-nsfw"]
    assert s.expected_participants == 2
    assert s.rows_per_page() == 2**20 // (64 * 4 + 8)


def test_empty_output_dir_becomes_a_fresh_absolute_one():
    s = RunSettings.from_run_config({"output-dir": ""})
    assert s.output_dir.startswith("/") and "coopt-flower-outputs" in s.output_dir


@pytest.mark.parametrize("override, message", [
    ({"output-dir": "relative/out"}, "output-dir must be an absolute path"),
    ({"prototypes": " , "}, "prototypes is empty"),
    ({"shared-size": 4}, "shared-size must be >= 8"),
    ({"shared-size": 16, "target-dim": 512}, "too small to align 512-d targets: use at least 32"),
    ({"prototypes": "efficientnet-lite0", "min-participants": 5},
     r"min-participants \(5\) exceeds the 1 participants"),
    ({"on-failure": "ignore"}, "on-failure must be one of reassign, drop"),
    ({"num-samples": 50, "shared-size": 64}, r"shared-size \(64\) exceeds num-samples \(50\)"),
    ({"target-dtype": "int8"}, "target-dtype must be one of"),
    ({"num-samples": "lots"}, "num-samples must be an integer"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        RunSettings.from_run_config({"output-dir": "/tmp/x", **override})


def test_split_specs():
    assert split_specs("a,, b ,") == ["a", "b"]


def test_pages_that_carry_images_are_smaller():
    s = RunSettings.from_run_config({"output-dir": "/tmp/x", "target-dim": 64, "max-message-mb": 1.0})
    assert s.rows_per_page(224 * 224 * 3) == 2**20 // (64 * 4 + 8 + 224 * 224 * 3) == 6
    explicit = RunSettings.from_run_config({"output-dir": "/tmp/x", "target-dim": 64,
                                            "max-message-mb": 1.0, "page-size": 1000})
    assert explicit.rows_per_page() == 1000 and explicit.rows_per_page(224 * 224 * 3) == 6


def test_defaults_equal_the_apps_run_config():
    """`flwr run .` and code that builds RunSettings directly get the same defaults."""
    import tomllib
    from dataclasses import fields
    from pathlib import Path

    from coopt_flower.config import DEFAULT_PROTOTYPES

    app_config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    app_config = app_config["tool"]["flwr"]["app"]["config"]
    defaults = RunSettings()
    keys = {f.name.replace("_", "-") for f in fields(RunSettings)}
    assert set(app_config) == keys
    for key, value in app_config.items():
        expected = getattr(defaults, key.replace("-", "_"))
        if key == "prototypes":
            value = [s.strip() for s in value.split(",")]
            assert tuple(value) == DEFAULT_PROTOTYPES
        assert value == expected, key


def test_device_auto_is_the_cpu_here_and_a_missing_gpu_is_one_line():
    import torch

    s = RunSettings.from_run_config({"output-dir": "/tmp/x"})
    assert s.device == "auto"
    assert s.resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        RunSettings.from_run_config({"output-dir": "/tmp/x", "device": "gpu"})
    if not torch.cuda.is_available():
        wanted = RunSettings.from_run_config({"output-dir": "/tmp/x", "device": "cuda"})
        with pytest.raises(ConfigError, match="device=cuda but this platform has no CUDA GPU"):
            wanted.resolved_device()
