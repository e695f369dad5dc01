"""CoOpt, Flower-agnostic core: prototypes, data, targets, uniform value, alignment, dataset format.

Nothing in this package imports Flower, so every piece is usable from a notebook and testable
on its own; ``server_app`` and ``client_app`` are thin Flower shells around it.
"""

__version__ = "0.1.0"
