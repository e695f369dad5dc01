"""Why a SuperNode did not connect (deploy.refusals) and keys kept out of the SuperLink's log
(deploy.superlink_launcher). The log lines are Flower 1.42's, as a TLS + node-auth cluster
wrote them; tests/test_faults_deployment.py runs the real cases."""

import logging

from deploy.pki import make_node_key
from deploy.refusals import key_fingerprint, refusal_reason
from deploy.superlink_launcher import RedactPublicKeys, redact

ACTIVATION_FAILED = """\x1b[91mERROR \x1b[0m:     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[code: 2004] Failed to activate SuperNode.
The SuperNode could not establish a connection to the SuperLink.
"""
TLS_FAILED = """\x1b[91mERROR \x1b[0m:     SSL/TLS handshake error detected.
\x1b[91mERROR \x1b[0m:     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)
"""
RETRYING = "\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 0.86 seconds\n"
CONNECTED = "INFO :      SuperNode ID: 1234\n"
SUPERLINK_ERROR = ("\x1b[91mERROR \x1b[0m:     [/v1/fleet/activate-node][ApiError:2004] Attempted to register "
                   "SuperNode with public key: {key}, exception: {why}")


def pem_repr(tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = make_node_key(tmp_path / "node")
    public = serialization.load_ssh_public_key(key.public.read_bytes())
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, repr(pem)


def test_an_unknown_key_and_a_key_in_use_are_told_apart_by_the_superlink_log(tmp_path):
    key, pem = pem_repr(tmp_path)
    fingerprint = key_fingerprint(key.public)
    unknown = redact(SUPERLINK_ERROR.format(key=pem, why="No SuperNode found with the given public key."))
    in_use = redact(SUPERLINK_ERROR.format(key=pem, why="SuperNode with node ID 77 could not be activated."))
    assert f"<public key {fingerprint}>" in unknown and "BEGIN PUBLIC KEY" not in unknown + in_use
    reason = refusal_reason(ACTIVATION_FAILED, superlink_log=unknown, fingerprint=fingerprint)
    assert reason.startswith("its key is not registered on the SuperLink")
    reason = refusal_reason(ACTIVATION_FAILED, superlink_log=unknown + "\n" + in_use, fingerprint=fingerprint)
    assert reason.startswith("its key is already in use: a SuperNode with the same key (node id 77) is online")
    # Another node's line says nothing about this one; without the SuperLink's log, both causes.
    other = refusal_reason(ACTIVATION_FAILED, superlink_log=in_use, fingerprint="sha256:000000000000")
    assert other == refusal_reason(ACTIVATION_FAILED)
    assert "not registered" in other and "already online" in other


def test_tls_unreachable_and_connected():
    reason = refusal_reason(TLS_FAILED, superlink="10.0.0.1:9092")
    assert reason.startswith("TLS certificate mismatch: the SuperLink at 10.0.0.1:9092")
    assert "(certificate verify failed: unable to get local issuer certificate)" in reason
    assert refusal_reason(RETRYING * 3, superlink="10.0.0.1:9092", alive=True).startswith(
        "SuperLink unreachable at 10.0.0.1:9092")
    assert refusal_reason(RETRYING, alive=False) is None  # exited for some other reason: not guessed
    assert refusal_reason(RETRYING + CONNECTED, alive=True) is None


def test_the_filter_rewrites_a_record_before_any_handler_sees_it(tmp_path):
    _, pem = pem_repr(tmp_path)
    record = logging.LogRecord("flwr", logging.ERROR, __file__, 1,
                               "Attempted to register SuperNode with public key: %s, exception: %s",
                               (pem, "No SuperNode found"), None)
    assert RedactPublicKeys().filter(record)
    assert "BEGIN PUBLIC KEY" not in record.getMessage() and "<public key sha256:" in record.getMessage()
    plain = redact("key -----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n end")
    assert plain.startswith("key <public key sha256:") and plain.endswith("> end")
