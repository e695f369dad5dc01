"""Errors a user can fix, and how they are told: one line, no traceback, a known exit code.

Every error here is the user's to act on (a run-config value, a file of the data, the output
directory), so its message is one line that says what to fix. :func:`one_line` makes any other
text fit a report cell or a log line (first line, no ANSI colour codes).

Exit codes of a CoOpt ServerApp that stops on purpose (also in ``CoOptStopped.exit_code``):

===== ==============================================================
210   configuration (run config, prototypes, data spec)
211   data (an image that cannot be decoded, with ``on-bad-sample=fail``)
212   output directory (read-only, not writable, not enough free space)
213   the round failed (too few participants left)
===== ==============================================================
"""

from __future__ import annotations

import errno
import re

EXIT_CONFIG = 210
EXIT_DATA = 211
EXIT_OUTPUT = 212
EXIT_ROUND_FAILED = 213

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b[^:]*: ")


def one_line(text: object, limit: int = 300, *, table: bool = False) -> str:
    """``text`` as one short line: ANSI codes stripped, the first non-empty line, shortened.

    Used for report cells and log lines, where a pasted traceback would break the table;
    ``table`` also replaces ``|`` (a Markdown column separator) with ``/``.
    """
    plain = _ANSI.sub("", str(text)).replace("\r", "\n")
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if len(lines) > 1:
        # Multi-line text is a traceback or a wrapped one (Ray, Flower): its useful line is
        # Flower's "... Message: <reason>", else the last "SomeError: reason", not the first.
        key = next((l for l in reversed(lines) if "occurred. Message: " in l), None) \
            or next((l for l in reversed(lines) if _EXCEPTION_LINE.match(l)), None)
        if key is not None:
            line = key.split("occurred. Message: ", 1)[-1].rstrip("'>").strip() if "occurred. Message: " in key \
                else key
    if table:
        line = line.replace("|", "/")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def did_you_mean(name: str, valid, *, cutoff: float = 0.6) -> str:
    """A hint for a misspelt key or name: `` (did you mean 'x'?)``, or ``""`` when nothing in
    ``valid`` is close. Every "unknown key" message (run config, benchmark and study configs)
    words its hint through this one function."""
    import difflib

    close = difflib.get_close_matches(str(name), sorted(map(str, valid)), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


class OutputDirError(OSError):
    """The output directory cannot take the run's files; the message says what to do."""


def describe_os_error(error: OSError, where: object, action: str = "write to") -> str:
    """One line for an OS error while writing ``where``, naming the fix."""
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC:
        return f"no space left on the device of {where}: free space there or choose another output-dir"
    if code == errno.EROFS:
        return f"cannot {action} {where}: it is on a read-only filesystem; choose another output-dir"
    if code == errno.EPERM:
        return (f"cannot {action} {where}: operation not permitted (immutable or append-only, "
                "see lsattr); choose another output-dir or clear the attribute")
    if code == errno.EACCES:
        return f"cannot {action} {where}: permission denied; choose an output-dir this user can write"
    if code == errno.EDQUOT:
        return f"cannot {action} {where}: disk quota exceeded; free space or choose another output-dir"
    return f"cannot {action} {where}: {one_line(error.strerror or error)}"


# --------------------------------------------------------------------------- lost replies
# Flower's Message.error codes (flwr.common.constant.ErrorCode, Flower 1.42).
_LOAD_CLIENT_APP, _MESSAGE_UNAVAILABLE, _REPLY_UNAVAILABLE, _NODE_UNAVAILABLE, _CLIENT_APP_CRASHED = 1, 3, 4, 5, 8


def message_error_reason(code: int, reason: str) -> str:
    """One line for a reply that carries Flower's error instead of content.

    Code 5 (``NODE_UNAVAILABLE``) is the SuperLink's verdict that the node stopped sending
    heartbeats: a node offline, not a slow one.
    """
    text = one_line(reason)
    if code == _NODE_UNAVAILABLE:
        return "node offline (heartbeat): its SuperNode stopped reporting to the SuperLink"
    if code in (_MESSAGE_UNAVAILABLE, _REPLY_UNAVAILABLE):
        return f"reply unavailable (expired, or the node was removed): {text}"
    if code == _LOAD_CLIENT_APP:
        return f"ClientApp could not be loaded: {text}"
    if code == _CLIENT_APP_CRASHED:
        return f"ClientApp crashed: {text}"
    return f"failed: {text}"


def no_reply_reason(node_connected: bool, elapsed_s: float, timeout_s: float) -> str:
    """One line for a message with no reply at all: the node left, or it is too slow."""
    if not node_connected:
        return f"node offline (heartbeat): it left the federation and sent no reply ({elapsed_s:.0f} s)"
    return f"no reply within reply-timeout-s={timeout_s:g} s"
