"""The CoOpt data platform as a Flower ServerApp (``flwr run .``)."""

from __future__ import annotations

from logging import ERROR

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from coopt_flower.config import ConfigError, RunSettings
from coopt_flower.preflight import preflight
from coopt_flower.scheduling import RoundFailed
from server_app.strategy import CoOptStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run config before any work, then run one CoOpt round."""
    try:
        settings = RunSettings.from_run_config(context.run_config)
        source = preflight(settings)
        CoOptStrategy(settings, source).start(grid)
    except (ConfigError, RoundFailed) as error:
        # One line that says what to fix; Flower marks the run as failed.
        log(ERROR, "CoOpt run stopped: %s", error)
        raise
