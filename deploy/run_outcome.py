"""Why a deployment run failed and what to do, in one line.

``flwr ls`` says only ``finished:failed``; the cause is in one of three places: the
ServerApp's own line (``CoOpt run stopped: ... [exit code N: kind]``, an error the user can
fix), Flower's status details (``No heartbeat received from the task``: the ServerApp process
died without a word), or the processes (the SuperLink or a SuperNode gone). The output
directory says whether a rerun resumes: finished rounds are kept and the temporary directory
of the round that died is removed first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from coopt_flower.errors import EXIT_CONFIG, EXIT_DATA

STOPPED_RE = re.compile(r"CoOpt run stopped: (.*?) \[exit code (\d+): [^\]]*\]")
ROUND_DONE_RE = re.compile(r"CoOpt round \d+ done: (\S+)")
TIMEOUT_MARK = "[deploy] flwr run killed after"
NO_HEARTBEAT = "No heartbeat received"


def finished_rounds(output_dir: Path) -> list[int]:
    """Rounds the run's progress file records as finished."""
    try:
        progress = json.loads((output_dir / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return sorted(int(r) for r in progress.get("rounds", {}))


def resume_advice(output_dir: Path | None, rerun: str) -> str:
    """What a rerun with the same output directory does ("" when nothing of the run is there)."""
    if output_dir is None or not output_dir.is_dir():
        return ""
    done = finished_rounds(output_dir)
    leftovers = sorted(p.name for p in output_dir.glob(".round-*.tmp-*"))
    if not done and not leftovers:
        return ""
    kept = f"round{'s' if len(done) > 1 else ''} {', '.join(map(str, done))} {'are' if len(done) > 1 else 'is'} kept" \
        if done else "nothing finished is lost"
    removed = f", the dead round's {', '.join(leftovers)} is removed" if leftovers else ""
    return f"; to resume, {rerun} ({kept}{removed})"


def output_dir_of(run_config: dict, output: str) -> Path | None:
    """The run's output directory: from the run config, else from the rounds it logged."""
    if run_config.get("output-dir"):
        return Path(str(run_config["output-dir"]))
    found = ROUND_DONE_RE.findall(output)
    return Path(found[-1]).parent if found else None


def failure_line(*, status: str, details: str, output: str, run_config: dict,
                 superlink_alive: bool = True, dead_nodes: Iterable[str] = (), timeout_s: float = 0,
                 rerun: str = "run the same command again") -> str:
    """One line: why the run did not complete and what to do.

    Parameters
    ----------
    status, details : str
        ``flwr ls``'s ``status`` and ``status-details`` ("" when the run never started).
    output : str
        What ``flwr run --stream`` printed.
    run_config : dict
        The run config it was given (``output-dir`` says where a resume would continue).
    superlink_alive : bool
        Whether the SuperLink process still runs.
    dead_nodes : iterable of str
        Names of the SuperNodes of the cluster that no longer run.
    rerun : str
        The words for running it again (the command line, where known).
    """
    out = output_dir_of(run_config, output)
    if out is not None and not run_config.get("output-dir"):  # a rerun would start a new directory
        rerun = f"{rerun} with output-dir='{out}' added to the run config"
    dead = sorted(dead_nodes)
    nodes = f"; SuperNode{'s' if len(dead) > 1 else ''} {', '.join(dead)} no longer run{'s' if len(dead) == 1 else ''}" \
        if dead else ""
    stopped = STOPPED_RE.findall(output)
    if stopped:
        cause, code = stopped[-1][0], int(stopped[-1][1])
        if code in (EXIT_CONFIG, EXIT_DATA):
            return f"the run stopped: {cause} (exit code {code}): fix it and {rerun}"
        return f"the run stopped: {cause} (exit code {code}){nodes}{resume_advice(out, rerun) or f'; {rerun} once fixed'}"
    if not superlink_alive:
        cause = "the SuperLink process died (see its log, logs/superlink.log in the cluster's workdir)"
    elif TIMEOUT_MARK in output:
        cause = f"flwr run did not finish within {timeout_s:.0f} s and was stopped (raise the timeout)"
    elif status == "finished:stopped":
        cause = "the run was stopped (flwr stop)"
    elif NO_HEARTBEAT in details:
        cause = ("the ServerApp process died without a word (killed, or out of memory: see `dmesg`); "
                 f"Flower: {details}")
    elif details:
        cause = f"the ServerApp failed: {details}"
    elif not status:
        last = [line for line in output.splitlines() if line.strip()]
        cause = f"flwr run did not start a run: {last[-1].strip() if last else 'no output'}"
    else:
        cause = f"the run ended {status}"
    return f"{cause}{nodes}{resume_advice(out, rerun)}"
