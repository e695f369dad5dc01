"""Every command's --help shows the defaults (coopt_flower.help_format)."""

import argparse
import subprocess
import sys

import pytest

from coopt_flower.help_format import DefaultsHelpFormatter


def test_defaults_are_shown_only_where_they_tell_something():
    p = argparse.ArgumentParser(prog="x", formatter_class=DefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=10, help="passes")
    p.add_argument("--out", required=True, help="where")
    p.add_argument("--size", default=None, help="side (default: the data's)")
    p.add_argument("--quiet", action="store_true", help="less")
    text = " ".join(p.format_help().split())
    assert "passes (default: 10)" in text
    assert "where (default" not in text and "less (default" not in text
    assert text.count("default") == 2  # 10, and the one the help text states itself


@pytest.mark.parametrize(("command", "needle"), [
    (["train"], "passes over the dataset (default: 10)"),
    (["train"], "AdamW learning rate (default: 0.001)"),
    (["export"], "samples per tar (default: 10000)"),
    (["export"], "1-100 (default: 95)"),
    (["probe"], "(default: fashion-mnist)"),
])
def test_the_coopt_commands_show_their_defaults(command, needle):
    out = subprocess.run([sys.executable, "-m", "coopt_flower.cli", *command, "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert needle in " ".join(out.stdout.split())
