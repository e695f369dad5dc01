"""Tests for simulations/study_args.py: config-key flags and the reproducing command."""

import argparse

import pytest

from simulations.study_args import add_key_overrides, reproducing_command


def test_key_override_flags_parse_their_type_and_default_to_none():
    parser = argparse.ArgumentParser()
    add_key_overrides(parser, {"num_train": int, "device": str}, helps={"device": "where to run"})
    args = parser.parse_args(["--num-train", "500"])
    assert (args.num_train, args.device) == (500, None)
    assert "where to run" in parser.format_help() and "overrides the config's key" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--num-train", "many"])


def test_reproducing_command_quotes_what_the_shell_would_split():
    command = reproducing_command("simulations.benchmark", ["--seeds", "0", "--skip-rows", "CoOpt (heads);BYOL"])
    assert command == "python -m simulations.benchmark --seeds 0 --skip-rows 'CoOpt (heads);BYOL'"
    assert reproducing_command("simulations.benchmark", []) == "python -m simulations.benchmark"
