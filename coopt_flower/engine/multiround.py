"""Several CoOpt rounds in a row, resumable: the loop a ServerApp and a study both run.

After each round, a student can be trained on the new dataset (``train-epochs``), probed, and
passed to the next round as a prototype candidate (``refinement``). Every finished step is
recorded in the run's progress file (:mod:`coopt_flower.engine.progress`), so a platform that is
stopped and started again with the same run config and output directory continues where it
stopped: finished rounds and students are kept, an unfinished round is redone.

A write that fails (a full disk, most often) stops the run with one
:class:`~coopt_flower.errors.OutputDirError` line that says what a rerun will do: a round that
was not published is redone, one that was is kept.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource
from coopt_flower.engine import progress
from coopt_flower.engine.round import run_round
from coopt_flower.engine.transport import Student, Transport
from coopt_flower.errors import OutputDirError, describe_os_error
from coopt_flower.round_student import student_payload, train_round_student

log = logging.getLogger(__name__)

#: OS errors that mean the output directory cannot take a write.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def run_rounds(settings: RunSettings, source: ImageSource, transport: Transport, *,
               before_write: Callable[[], None] | None = None) -> dict[str, Any]:
    """All ``num-server-rounds`` rounds, resuming from the output directory; returns the progress.

    Parameters
    ----------
    settings : RunSettings
    source : ImageSource
        The platform's copy of the data.
    transport : Transport
        Who carries the messages (the same for every round).
    before_write : callable, optional
        Called before anything of the run is written (the output directory's claim): by the
        first round about to write its dataset, or before a progress file is written.
    """
    out = settings.output_dir
    claim = _once(before_write)
    state = {"rounds": {}} if settings.overwrite else progress.load_progress(out)
    state["refinement"] = settings.refinement
    student: Student | None = None
    for server_round in range(1, settings.num_server_rounds + 1):
        entry = finished_round(settings, source, transport, state, server_round, student, claim)
        if settings.train_epochs and entry.get("student") is None:
            with kept_on_failure(out, server_round, f"round {server_round}'s student", "its student is trained again"):
                entry["student"] = trained_student(settings, entry["dataset"], server_round)
                progress.save_progress(out, state)
        if entry.get("student") and settings.refinement != "static":
            student = student_payload(entry["student"]["checkpoint"])
        with kept_on_failure(out, server_round, "the run summary", "the summary is written again"):
            progress.write_summary(out, state)
    for line in progress.render_summary(state).splitlines():
        log.info("  %s", line)
    return state


def _once(callback: Callable[[], None] | None) -> Callable[[], None]:
    done = [callback is None]

    def call() -> None:
        if not done[0]:
            done[0] = True
            callback()
    return call


def finished_round(settings: RunSettings, source: ImageSource, transport: Transport, state: dict[str, Any],
                   server_round: int, student: Student | None,
                   claim: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Round ``server_round``'s progress entry: from the progress file, from a dataset
    published before the stop, or from running the round now."""
    out, key = settings.output_dir, str(server_round)
    entry = state["rounds"].get(key)
    if entry is not None:
        log.info("round %d already finished (progress file); skipping", server_round)
        return entry
    progress.remove_stale_temporaries(out, server_round)
    manifest = None if settings.overwrite else progress.recover_published_round(out, server_round)
    if manifest is not None:
        log.info("round %d was published before the stop; keeping it", server_round)
    else:
        try:
            manifest = run_round(settings, source, transport, server_round=server_round, student=student,
                                 before_write=claim).manifest
        except OutputDirError as error:
            kept = f"rounds 1-{server_round - 1} are kept, " if server_round > 1 else ""
            raise OutputDirError(f"{error}; round {server_round} was not published and nothing of it "
                                 f"was kept: fix that and run the same command again ({kept}round "
                                 f"{server_round} is encoded again)") from None
    entry = state["rounds"][key] = progress.round_entry(manifest)
    claim()  # a round recovered from disk: the directory is this run's all the same
    with kept_on_failure(out, server_round, "the progress file", "it is recorded again"):
        progress.save_progress(out, state)
    return entry


@contextlib.contextmanager
def kept_on_failure(output_dir: str | Path, server_round: int, what: str, rerun: str) -> Iterator[None]:
    """Turn a failed write after round ``server_round`` was published into one line that says
    the round is safe and what a rerun does (``rerun``)."""
    try:
        yield
    except OutputDirError as error:
        raise OutputDirError(f"{error}; round {server_round} is published and kept: run the same command "
                             f"again once fixed ({rerun})") from None
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:  # e.g. a probe dataset that is missing: not a write
            raise
        raise OutputDirError(f"{describe_os_error(error, output_dir)} (writing {what}); round {server_round} "
                             f"is published and kept: run the same command again once fixed ({rerun})") from None


def trained_student(settings: RunSettings, dataset: str, server_round: int) -> dict[str, Any]:
    """Train and probe the round's student (:func:`~coopt_flower.round_student.train_round_student`)."""
    s = settings
    log.info("[student] training %s for %d epochs on round %d", s.student_arch, s.train_epochs, server_round)
    result = train_round_student(
        dataset, progress.student_dir(s.output_dir, server_round), arch=s.student_arch, epochs=s.train_epochs,
        image_size=s.student_image_size or None, batch_size=s.student_batch_size, seed=s.seed + server_round,
        probe_data=s.probe_data, probe_train_samples=s.probe_train_samples,
        probe_test_samples=s.probe_test_samples, device=s.resolved_device())
    log.info("[student] round %d: probe accuracy %s, %.1f s", server_round, result["probe_accuracy"],
             result["train_seconds"])
    return result
