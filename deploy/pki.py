"""Certificates and SuperNode keys for a Flower deployment (TLS + SuperNode authentication).

Formats, as flwr 1.42 reads them:

- TLS (``flower-superlink --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``, and the CA for
  ``flower-supernode --root-certificates`` and the ``root-certificates`` key of a connection in
  ``$FLWR_HOME/config.toml``): PEM certificates and a PEM (PKCS#8) private key. The SuperLink's
  certificate must name, as subject alternative names, every address SuperNodes and ``flwr``
  use to reach it (``127.0.0.1``/``localhost`` locally, the machine's DNS name or IP otherwise).
- SuperNode authentication: an elliptic-curve key on a NIST curve (we use P-384, as Flower's
  docs do). ``flower-supernode --auth-supernode-private-key`` loads it with
  ``load_ssh_private_key`` (OpenSSH private key format, unencrypted), and ``flwr supernode
  register KEY.pub`` with ``load_ssh_public_key`` (one ``ecdsa-sha2-nistp384 AAAA...`` line):
  exactly what ``ssh-keygen -t ecdsa -b 384 -N "" -f KEY`` writes.

Private keys are written with mode 0600 into directories with mode 0700.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coopt_flower.atomic import write_bytes_atomic

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the files :func:`make_certificates` writes."""

    directory: Path
    ca_cert: Path  # give this one to every SuperNode and to `flwr` (root-certificates)
    ca_key: Path  # keep on the platform machine only (signs new server certificates)
    server_cert: Path
    server_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TlsFiles:
        directory = Path(directory).resolve()
        return cls(directory, directory / "ca.crt", directory / "ca.key",
                   directory / "server.pem", directory / "server.key")

    def exist(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key))


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's authentication key pair."""

    private: Path  # --auth-supernode-private-key (stays on the SuperNode's machine)
    public: Path  # flwr supernode register <this file>


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and restrict it to its owner (0700)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certificates(directory: Path, hosts: list[str] | tuple[str, ...] = DEFAULT_HOSTS,
                      *, days: int = 365, overwrite: bool = False) -> TlsFiles:
    """A private CA and a SuperLink server certificate signed by it.

    Parameters
    ----------
    directory : Path
        Where to write ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` (mode 0700).
    hosts : list of str
        Names and IP addresses the SuperLink is reached at; each becomes a subject alternative
        name (``127.0.0.1`` and ``localhost`` are always added).
    days : int
        Validity.
    overwrite : bool
        Replace existing files; otherwise existing certificates are kept and returned (so that
        SuperNodes holding the old CA keep working).
    """
    files = TlsFiles.in_directory(private_dir(directory))
    names = list(dict.fromkeys([*hosts, *DEFAULT_HOSTS]))
    if files.exist() and not overwrite:
        missing = [h for h in names if h not in certificate_hosts(files.server_cert)]
        if missing:
            raise ValueError(f"{files.server_cert} does not name {', '.join(missing)}; make new "
                             "certificates (`python -m deploy.cluster certs --overwrite --host ...`) "
                             "and copy the new ca.crt to every SuperNode machine")
        return files
    now = _dt.datetime.now(_dt.timezone.utc)
    not_before, not_after = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coopt-flower CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    write_bytes_atomic(files.ca_key, _pem_key(ca_key), permissions=0o600)
    write_bytes_atomic(files.server_key, _pem_key(server_key), permissions=0o600)
    write_bytes_atomic(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), permissions=0o644)
    write_bytes_atomic(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), permissions=0o644)
    return files


def certificate_hosts(cert_path: Path) -> list[str]:
    """The subject alternative names of a certificate (to check ``--host``)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + \
        san.get_values_for_type(x509.DNSName)


def make_node_key(path: Path, *, overwrite: bool = False) -> NodeKey:
    """An EC P-384 key pair for SuperNode authentication, in OpenSSH format.

    Writes ``path`` (private, 0600) and ``path.pub`` (public, one line), as
    ``ssh-keygen -t ecdsa -b 384 -N "" -f path`` would.
    """
    path = Path(path).resolve()
    private_dir(path.parent)
    key = NodeKey(path, path.with_name(path.name + ".pub"))
    if key.private.is_file() and key.public.is_file() and not overwrite:
        return key
    private = ec.generate_private_key(ec.SECP384R1())
    write_bytes_atomic(key.private, private.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()), permissions=0o600)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
    write_bytes_atomic(key.public, public + f" coopt-{path.name}\n".encode(), permissions=0o644)
    return key
