"""Every command in the README's bash blocks still parses, so none goes stale (issue 28, item 7).

Executing them all would take hours (the benchmark, deployments); what goes stale is a renamed
option, a removed subcommand or a run-config key that no longer exists. So each command is run
as far as its argument parser, for real: ``coopt ...`` and ``python -m MODULE ...`` in a
subprocess whose ``ArgumentParser.parse_args`` stops the program once it has parsed (the
module's own parser, its own imports), and every run config (``flwr run --run-config``,
``run_default.sh`` overrides, ``deploy/run.sh -c``) is checked as the ServerApp checks it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Stops a program right after its parser accepted the arguments; a parser error exits 2 first.
# ``coopt`` parses with parse_known_args and hands the rest to a delegated module's parser; a
# subcommand of its own (export, probe, report: ``func`` set, not delegated) is parsed there.
PARSE_ONLY = """
import argparse, runpy, sys
_parse, _known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
def parsed():
    print("README-COMMAND-PARSED")
    sys.exit(0)
def parse_args(self, args=None, namespace=None):
    _parse(self, args, namespace)
    parsed()
def parse_known_args(self, args=None, namespace=None):
    namespace, rest = _known(self, args, namespace)
    if hasattr(namespace, "func") and not getattr(namespace, "delegated", False) and not rest:
        parsed()
    return namespace, rest
argparse.ArgumentParser.parse_args = parse_args
argparse.ArgumentParser.parse_known_args = parse_known_args
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def bash_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks: continuation lines joined, comments and optional
    ``[...]`` parts dropped, split as the shell would."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = [w for w in shlex.split(line, comments=True) if not (w.startswith("[") and w.endswith("]"))]
            if words:
                commands.append(words)
    return commands


def _program(words: list[str]) -> tuple[str, list[str]] | None:
    """(module, argv) for the commands that run a Python parser, else None."""
    if words[0] == "coopt":
        return "coopt_flower.cli", words[1:]
    if words[:2] == ["python", "-m"]:
        return words[2], words[3:]
    return None


def _run_configs(words: list[str]) -> list[str]:
    """The run-config strings a command passes (``key=value ...``)."""
    if words[:2] == ["flwr", "run"] and "--run-config" in words:
        value = words[words.index("--run-config") + 1]
        return [] if value.endswith(".toml") else [value]
    if words[:2] == ["bash", "scripts/run_default.sh"] and len(words) > 2:
        return [" ".join(words[2:])]
    if words[:2] == ["bash", "deploy/run.sh"] and "-c" in words:
        return [words[words.index("-c") + 1]]
    return []


COMMANDS = bash_commands(README.read_text(encoding="utf-8"))
PROGRAMS = [p for p in map(_program, COMMANDS) if p is not None]
RUN_CONFIGS = [c for words in COMMANDS for c in _run_configs(words)]


def test_the_readme_has_commands_of_each_kind():
    # The extraction itself can fail silently; these are there today.
    assert len(PROGRAMS) >= 8 and any(m == "coopt_flower.cli" for m, _ in PROGRAMS)
    assert len(RUN_CONFIGS) >= 4


@pytest.mark.parametrize(("module", "argv"), PROGRAMS, ids=[" ".join([m, *a])[:70] for m, a in PROGRAMS])
def test_each_readme_command_parses(module, argv):
    out = subprocess.run([sys.executable, "-c", PARSE_ONLY, module, *argv], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert "README-COMMAND-PARSED" in out.stdout, (
        f"README command `{' '.join([module, *argv])}` no longer parses (exit {out.returncode}):\n"
        f"{out.stderr[-1500:]}")


@pytest.mark.parametrize("text", RUN_CONFIGS)
def test_each_readme_run_config_is_valid(text):
    from coopt_flower.config import check_run_config
    from deploy.flower import parse_run_config

    check_run_config(parse_run_config([text]))


def test_a_stale_command_would_be_caught(tmp_path):
    out = subprocess.run([sys.executable, "-c", PARSE_ONLY, "coopt_flower.cli", "export", "R", "--format", "hf",
                          "--out", str(tmp_path), "--no-such-option"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert "README-COMMAND-PARSED" not in out.stdout and out.returncode == 2
    with pytest.raises(Exception, match="no-such-key"):
        from coopt_flower.config import check_run_config
        from deploy.flower import parse_run_config
        check_run_config(parse_run_config(["no-such-key=1"]))
