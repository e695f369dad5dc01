"""How a CoOpt ServerApp stops: one line for the user's errors, a resume hint when killed.

Errors the user can fix (run config, data, output directory, a round with too few
participants) end the ServerApp with one line, ``CoOpt run stopped: ... [exit code N: kind]``,
and Flower's exit code ``N`` (:mod:`coopt_flower.errors`). Flower would log such an exception
with its traceback, then its own exit banner; :class:`OneLineFilter` drops both for these
errors only (every other exception keeps its traceback: it is a bug to report).
"""

from __future__ import annotations

import logging
from logging import ERROR, WARNING

from flwr.app.exception import AppExitException
from flwr.common import log

from coopt_flower.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OUTPUT, EXIT_ROUND_FAILED, one_line
from coopt_flower.preflight import exit_code
from coopt_flower.engine.failures import RoundFailed


class CoOptStopped(AppExitException):
    """The run stopped on an error the user can fix; ``exit_code`` says which kind."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


KINDS = {EXIT_CONFIG: "configuration", EXIT_DATA: "data", EXIT_OUTPUT: "output directory",
         EXIT_ROUND_FAILED: "round failed"}


def classify(error: BaseException) -> tuple[int, str] | None:
    """``(exit code, kind)`` of an error the user can fix (the same codes ``coopt check`` and
    ``coopt run`` use before Flower starts); None for anything else."""
    code = EXIT_ROUND_FAILED if isinstance(error, RoundFailed) else exit_code(error)
    return None if code is None else (code, KINDS[code])


def stop(error: BaseException) -> CoOptStopped | None:
    """Log the one line for ``error`` and return the exception to raise (None: not ours)."""
    kind = classify(error)
    if kind is None:
        return None
    code, name = kind
    log(ERROR, "CoOpt run stopped: %s [exit code %d: %s]", one_line(error, 2000), code, name)
    return CoOptStopped(one_line(error, 2000), code)


class OneLineFilter(logging.Filter):
    """Drops Flower's traceback and exit banner for a :class:`CoOptStopped` (already said)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None and not isinstance(exc, CoOptStopped):
            exc = exc.__cause__ or exc.__context__
        if exc is not None:
            self.stopped = True
            return False
        if self.stopped and str(record.msg).startswith(("Exit Code:", "An exception occurred")):
            return False
        if self.stopped and str(record.msg).startswith("Traceback (most recent call last)"):
            return False
        return True


_FILTER = OneLineFilter()


def install_one_line_errors() -> None:
    """Add :class:`OneLineFilter` to Flower's logger (once per process)."""
    logger = logging.getLogger("flwr")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def resume_hint(output_dir: str) -> callable:
    """An exit handler for Flower: a run that did not finish says how to resume it."""
    state = {"finished": False}

    def on_exit() -> None:
        if not state["finished"] and not _FILTER.stopped:
            log(WARNING, "CoOpt run interrupted: run the same command again (same run config and "
                "output-dir %s) to resume from the last finished step", output_dir)

    on_exit.finished = state  # set state["finished"] = True once the run completes
    return on_exit
