"""The CoOpt data platform as a Flower ServerApp (``flwr run .``)."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coopt_flower.config import RunSettings
from server_app.strategy import CoOptStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run config, then run one CoOpt round."""
    settings = RunSettings.from_run_config(context.run_config)
    CoOptStrategy(settings).start(grid)
