"""Where the Flower app is: the source checkout, or a copy staged from the installed wheel.

``flwr run DIR`` bundles ``DIR`` (its ``pyproject.toml`` with ``[tool.flwr.app]`` and the
app's Python packages) into a FAB. In a source checkout ``DIR`` is the repository root. An
installed wheel has no such directory (``site-packages`` must never be bundled), so the
wheel carries the project's ``pyproject.toml`` as ``deploy/flower_app.toml`` and
:func:`stage_app` copies it and the app's packages (``.py`` files only) into a cache folder
named by their content hash: staged once per version, never half-written (built in a
temporary folder and renamed into place).

``$COOPT_FLOWER_APP`` names an app directory to use instead (e.g. a modified copy).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from pathlib import Path

APP_PACKAGES = ("coopt_flower", "server_app", "client_app")
PACKAGED_PYPROJECT = Path(__file__).resolve().parent / "flower_app.toml"
CHECKOUT = Path(__file__).resolve().parents[1]


def is_app_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a Flower app's ``pyproject.toml``."""
    pyproject = Path(path) / "pyproject.toml"
    return pyproject.is_file() and "[tool.flwr.app]" in pyproject.read_text(encoding="utf-8")


def cache_root() -> Path:
    """``$COOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/coopt-flower`` (``~/.cache/coopt-flower``)."""
    if os.environ.get("COOPT_CACHE_DIR"):
        return Path(os.environ["COOPT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coopt-flower"


def _package_files() -> list[tuple[Path, Path]]:
    """(installed file, path inside the app) of every ``.py`` file of the app's packages."""
    files = []
    for name in APP_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {name!r} is not installed; reinstall coopt-flower")
        root = Path(list(spec.submodule_search_locations)[0])
        files += [(path, Path(name) / path.relative_to(root)) for path in sorted(root.rglob("*.py"))]
    return files


def stage_app(root: Path | None = None, pyproject: Path = PACKAGED_PYPROJECT) -> Path:
    """A Flower app directory built from the installed packages (see the module docstring)."""
    if not pyproject.is_file():
        raise FileNotFoundError(f"{pyproject} is missing: this coopt-flower installation has no "
                                "Flower app config; reinstall it, or set COOPT_FLOWER_APP")
    files = _package_files()
    digest = hashlib.sha256(pyproject.read_bytes())
    for source, relative in files:
        digest.update(str(relative).encode() + b"\0" + source.read_bytes())
    root = Path(root or cache_root())
    target = root / f"flower-app-{digest.hexdigest()[:16]}"
    if is_app_dir(target):
        return target
    staging = root / f".{target.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        for source, relative in files:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / relative)
        shutil.copyfile(pyproject, staging / "pyproject.toml")
        try:
            os.rename(staging, target)
        except OSError:  # another process staged the same content first
            if not is_app_dir(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def app_directory() -> Path:
    """The Flower app to ``flwr run``: ``$COOPT_FLOWER_APP``, the checkout, or a staged copy."""
    if os.environ.get("COOPT_FLOWER_APP"):
        return Path(os.environ["COOPT_FLOWER_APP"]).resolve()
    if is_app_dir(CHECKOUT):
        return CHECKOUT
    return stage_app()


def app_with_client(directory: str | os.PathLike, client_file: str | os.PathLike,
                    extra_config: dict | None = None, note: str = "a modified copy of coopt-flower") -> Path:
    """A copy of the checkout's app in ``directory`` whose ClientApp is ``client_file``'s ``app``.

    For tests and benchmarks that need participants to misbehave or to be paced: the file is
    copied next to the app's packages and named as the ClientApp in the copy's pyproject;
    ``extra_config`` adds run-config keys (with their defaults) that it reads. The production
    app never loads it.
    """
    import json

    app = Path(directory)
    for package in APP_PACKAGES:
        shutil.copytree(CHECKOUT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    client_file = Path(client_file)
    shutil.copy(client_file, app / client_file.name)
    pyproject = (CHECKOUT / "pyproject.toml").read_text(encoding="utf-8")
    pyproject = pyproject.replace('clientapp = "client_app.client_app:app"',
                                  f'clientapp = "{client_file.stem}:app"')
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (extra_config or {}).items())
    pyproject = pyproject.replace("[tool.flwr.app.config]\n", "[tool.flwr.app.config]\n" + extra)
    (app / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    (app / "README.md").write_text(note + "\n", encoding="utf-8")
    return app
