"""The CoOpt data platform on a Flower Grid: the round engine's adapter, not a Flower ``Strategy``.

Flower's strategies (``flwr.serverapp.strategy``: FedAvg and the rest) configure and aggregate
model updates, one ``ArrayRecord`` per node per round. A CoOpt round has another shape: a
describe, a shared subset, then pages of ids out and targets back until a dataset is written.
Every step, decision and check of that round lives in the Flower-free engine
(:func:`coopt_flower.engine.round.run_round`, :func:`coopt_flower.engine.multiround.run_rounds`);
this class only hands it a transport over the Grid (:class:`server_app.grid_transport.GridTransport`),
so ``flwr run`` and an in-process round run the very same code.
"""

from __future__ import annotations

from logging import INFO
from typing import Any

from flwr.common import log
from flwr.serverapp import Grid

from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource, open_source
from coopt_flower.engine.multiround import run_rounds
from coopt_flower.engine.round import RoundResult, run_round
from coopt_flower.engine.transport import Student
from coopt_flower.preflight import claim_output_dir
from server_app.grid_transport import GridTransport


class CoOptStrategy:
    """The CoOpt data platform.

    Parameters
    ----------
    settings : RunSettings
        The validated run config.
    source : ImageSource, optional
        The platform's copy of the data (opened from ``settings.data`` when omitted).
    """

    def __init__(self, settings: RunSettings, source: ImageSource | None = None) -> None:
        self.settings = settings
        self.source = source if source is not None else open_source(settings.data)

    def summary(self) -> None:
        """Log the platform's settings, as Flower strategies do before starting."""
        s = self.settings
        log(INFO, "CoOpt platform: data=%s (%d available), num-samples=%s, shared-size=%d, "
            "target-dim=%d, seed=%d, page=%d samples, on-failure=%s, min-participants=%d, "
            "output=%s", s.data, len(self.source), s.num_samples or "all", s.shared_size,
            s.target_dim, s.seed, s.rows_per_page(), s.on_failure, s.min_participants,
            s.output_dir)

    def transport(self, grid: Grid) -> GridTransport:
        return GridTransport(grid, self.settings.reply_timeout_s)

    def start(self, grid: Grid, server_round: int = 1, student: Student | None = None) -> RoundResult:
        """Run one CoOpt round over ``grid`` and publish its dataset
        (:func:`~coopt_flower.engine.round.run_round`)."""
        self.summary()
        return run_round(self.settings, self.source, self.transport(grid), server_round=server_round,
                         student=student)

    def start_rounds(self, grid: Grid) -> dict[str, Any]:
        """Run every round of the run, resuming where a stopped run left off
        (:func:`~coopt_flower.engine.multiround.run_rounds`); returns the run's progress."""
        self.summary()
        # The output directory is claimed (run.json) only when the run writes its first data:
        # a run refused before leaves it as it was.
        return run_rounds(self.settings, self.source, self.transport(grid),
                          before_write=lambda: claim_output_dir(self.settings))
