"""CoOpt, Flower-agnostic core: prototypes, data, targets, uniform value, alignment, dataset format.

Nothing in this package imports Flower, so every piece is usable from a notebook and testable
on its own; ``server_app`` and ``client_app`` are thin Flower shells around it.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # pyproject.toml's [project] version is the one source (Flower reads it too)
    __version__ = version("coopt-flower")
except PackageNotFoundError:  # a checkout used without installing it
    __version__ = "0+unknown"
