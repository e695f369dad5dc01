"""Why a SuperNode did not connect, in one line: key unknown, key in use, TLS, unreachable.

Flower 1.42's SuperNode says only ``[code: 2004] Failed to activate SuperNode`` (exit code
305) whether its key is not registered or another SuperNode with the same key is online; the
SuperLink's error line tells the two apart (``No SuperNode found with the given public key``
vs ``SuperNode with node ID N could not be activated``). The SuperLink runs through
:mod:`deploy.superlink_launcher`, which writes each key as its fingerprint, so the line that
belongs to a node is found by the fingerprint of that node's key (:func:`key_fingerprint`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

NODE_ID_RE = re.compile(r"SuperNode ID: (\d+)")
TLS_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "SSL/TLS handshake error", "certificate verify failed")
ACTIVATION_FAILED = "Failed to activate SuperNode"
RETRYING = "Connection attempt failed"
SSL_DETAIL_RE = re.compile(r"\[SSL: [A-Z_]+\] ([^\n(]+)")
IN_USE_RE = re.compile(r"SuperNode with node ID (\d+) could not be activated")


def key_fingerprint(public_key_file: str | Path) -> str:
    """``sha256:<12 hex>`` of the PEM bytes a SuperNode sends for this OpenSSH public key
    (the fingerprint :mod:`deploy.superlink_launcher` writes in the SuperLink's log)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_public_key(Path(public_key_file).read_bytes())
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(pem).hexdigest()[:12]


def superlink_verdict(superlink_log: str, fingerprint: str) -> str:
    """The SuperLink's last error line about the key with ``fingerprint`` ("" if none)."""
    lines = [line for line in superlink_log.splitlines() if f"<public key {fingerprint}>" in line]
    return lines[-1] if lines else ""


def refusal_reason(node_log: str, *, superlink: str = "", superlink_log: str = "", fingerprint: str = "",
                   alive: bool = False) -> str | None:
    """Why the SuperNode whose log is ``node_log`` is not connected; None when it is.

    Parameters
    ----------
    node_log : str
        The SuperNode's log.
    superlink : str
        The address it connects to (named in the line).
    superlink_log, fingerprint : str
        The SuperLink's log and the fingerprint of the node's key, when this machine has them
        (a local cluster): they tell an unknown key from one already in use.
    alive : bool
        Whether the SuperNode process still runs (it keeps retrying an unreachable SuperLink).
    """
    if NODE_ID_RE.search(node_log):
        return None
    where = f" at {superlink}" if superlink else ""
    if any(marker in node_log for marker in TLS_MARKERS):
        detail = SSL_DETAIL_RE.search(node_log)
        detail = f" ({detail.group(1).strip()})" if detail else ""
        return (f"TLS certificate mismatch: the SuperLink{where} presents a certificate that the CA given "
                f"with --root-certificates does not verify{detail}: give this node the platform's ca.crt")
    if ACTIVATION_FAILED in node_log:
        verdict = superlink_verdict(superlink_log, fingerprint) if fingerprint else ""
        if "No SuperNode found" in verdict:
            return ("its key is not registered on the SuperLink: register the node's public key on the "
                    "platform machine (`coopt deploy register KEY.pub`) before starting it")
        if in_use := IN_USE_RE.search(verdict):
            return (f"its key is already in use: a SuperNode with the same key (node id {in_use.group(1)}) is "
                    "online; give every SuperNode its own key pair, or stop the other one first")
        return ("the SuperLink refused its key: it is not registered (`coopt deploy register KEY.pub` on "
                "the platform machine), or a SuperNode with the same key is already online")
    if alive and RETRYING in node_log:
        return (f"SuperLink unreachable{where}: nothing answers there (is the SuperLink running, are the "
                "address and port right, is a firewall in the way?); the node keeps retrying")
    return None
