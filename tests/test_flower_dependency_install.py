"""Plain `flwr run .`: Flower 1.42's default runtime dependency install, done the way Flower does.

Without ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` every run's process
(``flwr-simulation``, ``flwr-serverapp``, ``flwr-clientapp``) installs the FAB into
``$FLWR_HOME/apps/`` and calls ``flwr.supercore.superexec.dependency_installer
.install_app_dependencies``, which runs, in the installed app's directory,

    <its python> -m uv sync --python <its python> --no-install-project
        --no-install-package flwr --inexact

with ``UV_PROJECT_ENVIRONMENT=$FLWR_HOME/runtime-envs/<run id>``, then puts that environment's
site-packages first on ``sys.path``. A FAB carries no ``uv.lock`` (only *.py, *.toml, *.md, ...),
so ``uv sync`` resolves ``[project].dependencies`` afresh each time, universally over
``requires-python``: the set must lock, and every Python it admits must find wheels.

Both tests read uv's cache offline first. The lock needs only the package index (a few MB, read
online when the cache lacks it, skipped when pypi.org is unreachable); the real environment is
~6 GB (PyPI's torch carries the CUDA libraries), so it is built only from a cache that already
holds it (after one plain `flwr run .`) or with ``COOPT_TEST_UV_DOWNLOAD=1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Packages without an sdist fallback: a Python that requires-python admits needs their wheels.
BINARY_ONLY = ("torch", "onnxruntime", "ray")
OFFLINE_MISS = ("network was disabled", "not found in the cache", "connectivity is disabled")

STAGE = """
import json, sys
from pathlib import Path
from flwr.cli.build import build_fab_from_disk
from flwr.cli.install import install_from_fab
app = install_from_fab(build_fab_from_disk(Path(sys.argv[1])), skip_prompt=True)
print(json.dumps({"app": str(app)}))
"""

INSTALL = """
import json, sys
from pathlib import Path
from flwr.supercore.superexec.dependency_installer import install_app_dependencies
env = install_app_dependencies(Path(sys.argv[1]), run_id=1)
sys.path.insert(0, sys.argv[1])
import torch, torchvision, onnxruntime, ray, flwr
import server_app.server_app, client_app.client_app
print(json.dumps({"env": str(env), "torch": torch.__file__, "ray": ray.__file__, "flwr": flwr.__file__}))
"""


def _uv_available() -> bool:
    return subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode == 0


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """(installed app dir, environment): the FAB `flwr run .` builds, installed as Flower does."""
    if not _uv_available():
        pytest.skip(f"uv is not installed for {sys.executable} (Flower runs `python -m uv sync`)")
    home = tmp_path_factory.mktemp("flwr-home")
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1")
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)
    run = subprocess.run([sys.executable, "-c", STAGE, str(ROOT)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    app = Path(_last_json(run.stdout)["app"])
    assert (app / "pyproject.toml").is_file() and not (app / "uv.lock").exists()
    return app, env


def _run_offline_first(cmd, cwd, env, online_ok: str | None, timeout: int):
    """``cmd`` with uv offline; online again only where ``online_ok`` is None (else: skip, why)."""
    run = subprocess.run(cmd, cwd=cwd, env=dict(env, UV_OFFLINE="1"), capture_output=True,
                         text=True, timeout=timeout)
    if run.returncode == 0 or not any(s in run.stdout + run.stderr for s in OFFLINE_MISS):
        return run
    if online_ok is not None:
        pytest.skip(online_ok)
    if not _pypi_reachable():
        pytest.skip("uv's cache lacks the app's packages and pypi.org is unreachable")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _cpython_minors(spec: str) -> list[int]:
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(spec)
    return [minor for minor in range(8, 30) if f"3.{minor}.0" in allowed or f"3.{minor}.99" in allowed]


def test_dependencies_lock_for_every_python_requires_python_admits(staged):
    """The resolution `uv sync` does first; then: every admitted CPython has the wheels it needs."""
    app, env = staged
    try:
        run = _run_offline_first([sys.executable, "-m", "uv", "lock", "--python", sys.executable],
                                 app, env, None, timeout=600)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        lock = tomllib.loads((app / "uv.lock").read_text())
    finally:
        (app / "uv.lock").unlink(missing_ok=True)  # as Flower's FAB: `uv sync` resolves afresh
    project = tomllib.loads((app / "pyproject.toml").read_text())["project"]
    assert lock["requires-python"].replace(" ", "") == project["requires-python"].replace(" ", "")
    packages = {p["name"]: p for p in lock["package"]}
    assert {"torch", "torchvision", "ray", "onnxruntime", "flwr"} <= set(packages)
    minors = _cpython_minors(project["requires-python"])
    assert minors and minors[0] == 11, minors
    for name in BINARY_ONLY:
        urls = [w["url"] for p in lock["package"] if p["name"] == name for w in p.get("wheels", [])]
        for minor in minors:
            tag = re.compile(rf"-cp3{minor}-cp3{minor}-manylinux[^/]*x86_64\.whl$")
            assert any(tag.search(u) for u in urls), (
                f"{name} {packages[name]['version']} has no Linux x86_64 wheel for CPython 3.{minor}, "
                f"which requires-python {project['requires-python']!r} admits")


def test_flower_builds_the_app_environment_and_the_app_imports_from_it(staged):
    """Flower's own install_app_dependencies, then the app's modules import from that environment."""
    app, env = staged
    download = os.environ.get("COOPT_TEST_UV_DOWNLOAD") == "1"
    why = None if download else ("uv's cache lacks the app's environment (~6 GB with PyPI's CUDA "
                                 "torch): run a plain `flwr run .` once or set COOPT_TEST_UV_DOWNLOAD=1")
    runtime_env = Path(env["FLWR_HOME"]) / "runtime-envs" / "1"
    try:
        run = _run_offline_first([sys.executable, "-c", INSTALL, str(app)], app, env, why, timeout=3600)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        found = _last_json(run.stdout)
        assert Path(found["env"]) == runtime_env
        assert found["torch"].startswith(str(runtime_env)), found  # the app's torch, not this venv's
        assert found["ray"].startswith(str(runtime_env)), found
        assert not found["flwr"].startswith(str(runtime_env)), found  # --no-install-package flwr
    finally:
        shutil.rmtree(runtime_env, ignore_errors=True)  # GBs where uv's cache cannot hardlink
