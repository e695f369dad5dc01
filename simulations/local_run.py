"""Moved to :mod:`deploy.local_run`, which the wheel packages (``coopt run``).

Kept so that ``python -m simulations.local_run`` and existing imports keep working.
"""

import sys

from deploy.flower import toml_value
from deploy.local_run import (
    LocalRun, main, run_local_simulation, run_pids, run_succeeded, stop_superlink, superlink_pids,
)

__all__ = ["LocalRun", "main", "run_local_simulation", "run_pids", "run_succeeded",
           "stop_superlink", "superlink_pids", "toml_value"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m simulations.local_run"))
