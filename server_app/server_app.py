"""The CoOpt data platform as a Flower ServerApp (``flwr run .``).

Runs ``num-server-rounds`` rounds of :class:`~server_app.strategy.CoOptStrategy`. After each
round it can train a student on the new dataset (``train-epochs``), probe it, and pass it to
the next round as a prototype candidate (``refinement``). Every finished step is recorded in
``<output-dir>/checkpoint.json``, so a platform that is stopped and started again with the
same run config and output directory continues where it stopped.
"""

from __future__ import annotations

import logging
from logging import INFO

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from coopt_flower import rounds
from coopt_flower.config import RunSettings
from coopt_flower.preflight import preflight
from coopt_flower.refinement import student_payload, train_round_student
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


def run_rounds(grid: Grid, settings: RunSettings, strategy: CoOptStrategy) -> dict:
    """All rounds, resuming from the checkpoint in the output directory; returns it."""
    out = settings.output_dir
    checkpoint = {"rounds": {}} if settings.overwrite else rounds.load_checkpoint(out)
    checkpoint["refinement"] = settings.refinement
    student = None
    for server_round in range(1, settings.num_server_rounds + 1):
        key = str(server_round)
        entry = checkpoint["rounds"].get(key)
        if entry is None:
            rounds.remove_stale_temporaries(out, server_round)
            summary = None if settings.overwrite else rounds.recover_published_round(out, server_round)
            if summary is not None:
                log(INFO, "round %d was published before the stop; keeping it", server_round)
            else:
                summary = strategy.start(grid, server_round, student).summary
            entry = checkpoint["rounds"][key] = rounds.round_entry(summary)
            rounds.save_checkpoint(out, checkpoint)
        else:
            log(INFO, "round %d already finished (checkpoint); skipping", server_round)

        if settings.train_epochs and entry.get("student") is None:
            log(INFO, "[student] training %s for %d epochs on round %d", settings.student_arch,
                settings.train_epochs, server_round)
            entry["student"] = train_round_student(
                entry["dataset"], rounds.student_dir(out, server_round), arch=settings.student_arch,
                epochs=settings.train_epochs, image_size=settings.student_image_size or None,
                batch_size=256, seed=settings.seed + server_round, probe_data=settings.probe_data,
                probe_train_samples=settings.probe_train_samples,
                probe_test_samples=settings.probe_test_samples, device=settings.resolved_device())
            rounds.save_checkpoint(out, checkpoint)
            log(INFO, "[student] round %d: probe accuracy %s, %.1f s", server_round,
                entry["student"]["probe_accuracy"], entry["student"]["train_seconds"])
        if entry.get("student") and settings.refinement != "static":
            student = student_payload(entry["student"]["checkpoint"])
        rounds.write_summary(out, checkpoint)
    for line in rounds.render_summary(checkpoint).splitlines():
        log(INFO, "  %s", line)
    return checkpoint


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
        run_rounds(grid, settings, CoOptStrategy(settings, source))
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
