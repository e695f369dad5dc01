"""The CoOpt data platform as a Flower ServerApp (``flwr run .``).

Validates the run config, then runs ``num-server-rounds`` rounds through
:class:`~server_app.strategy.CoOptStrategy` (the engine's multi-round loop over the Grid:
after each round a student can be trained on the new dataset and passed to the next round;
every finished step is recorded in ``<output-dir>/progress.json``, so a platform that is
stopped and started again with the same run config and output directory continues where it
stopped).
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coopt_flower.config import RunSettings
from coopt_flower.preflight import preflight
from server_app.stopping import install_one_line_errors, resume_hint, stop
from server_app.strategy import CoOptStrategy

app = ServerApp()


def route_core_logs_to_flower() -> None:
    """Show the core's log lines (``coopt_flower.*``) the way Flower shows its own.

    The core logs through the standard ``logging`` module and knows nothing of Flower; in a
    ServerApp, Flower's console handler is what reaches the user's ``flwr run`` stream.
    """
    core, flower = logging.getLogger("coopt_flower"), logging.getLogger("flwr")
    for handler in flower.handlers:
        if handler not in core.handlers:
            core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run config before any work, then run the rounds.

    Errors the user can fix end the run with one line and a known exit code
    (:mod:`server_app.stopping`); a run that is stopped or killed says how to resume.
    """
    route_core_logs_to_flower()
    install_one_line_errors()
    try:
        settings = RunSettings.from_run_config(context.run_config)
        source = preflight(settings)
        hint = resume_hint(settings.output_dir)
        _add_exit_handler(hint)
        CoOptStrategy(settings, source).start_rounds(grid)
        hint.finished["finished"] = True
    except Exception as error:
        stopped = stop(error)
        if stopped is None:
            raise  # a bug: keep the traceback
        raise stopped from None


def _add_exit_handler(handler) -> None:
    try:
        from flwr.supercore.exit import add_exit_handler
    except ImportError:  # pragma: no cover - other Flower versions
        return
    add_exit_handler(handler)
