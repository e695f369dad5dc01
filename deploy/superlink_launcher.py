"""``flower-superlink`` with public keys kept out of its log.

Flower 1.42's SuperLink writes the whole PEM public key of every SuperNode it refuses into its
error lines (``Attempted to register SuperNode with public key: b'-----BEGIN PUBLIC KEY-----
...'``). This launcher runs the very same ``flower-superlink`` (same arguments, same process)
after adding a logging filter that replaces each key with its fingerprint,
``<public key sha256:0123456789ab>`` (the first 12 hex digits of the SHA-256 of the PEM bytes
the SuperNode sent), which is enough to tell which node was refused
(:func:`deploy.local_cluster.key_fingerprint` computes it from the node's key file).

Run as a script (``python deploy/superlink_launcher.py ARGS``): it imports only Flower and the
standard library, so it works from the SuperLink's private working directory.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
import sys

#: A PEM public key as Python's repr of the bytes shows it in a log line.
PEM_REPR = re.compile(r"b(['\"])-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----(?:\\n)?\1", re.S)
#: The same key as plain text (a log line that printed it decoded).
PEM_TEXT = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----\n?", re.S)


def fingerprint(pem: bytes) -> str:
    """``sha256:<12 hex>`` of a PEM public key's bytes."""
    return "sha256:" + hashlib.sha256(pem).hexdigest()[:12]


def redact(text: str) -> str:
    """``text`` with every PEM public key replaced by ``<public key sha256:...>``."""
    def from_repr(match: re.Match) -> str:
        try:
            pem = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            pem = match.group(0).encode()
        return f"<public key {fingerprint(pem)}>"

    text = PEM_REPR.sub(from_repr, text)
    return PEM_TEXT.sub(lambda m: f"<public key {fingerprint(m.group(0).encode())}>", text)


class RedactPublicKeys(logging.Filter):
    """Rewrites a record's message with :func:`redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "BEGIN PUBLIC KEY" in message:
            record.msg, record.args = redact(message), None
        return True


def install() -> None:
    """Add the filter to Flower's logger and to every handler that prints its lines."""
    from flwr.common import logger as flower_logging  # noqa: F401  (creates Flower's handlers)

    redactor = RedactPublicKeys()
    for logger in (logging.getLogger("flwr"), logging.getLogger()):
        logger.addFilter(redactor)
        for handler in logger.handlers:
            handler.addFilter(redactor)


def main() -> int:
    install()
    from flwr.superlink.cli import flower_superlink

    sys.argv[0] = "flower-superlink"
    return flower_superlink() or 0


if __name__ == "__main__":
    sys.exit(main())
