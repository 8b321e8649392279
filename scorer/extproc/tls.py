"""TLS for the picker's gRPC port: a provided certificate (reloaded when its files change) or a self-signed one.

Why it exists: in a cluster the gateway reaches the picker over TLS, as with GIE's endpoint picker, whose secure
serving is on by default and which makes a self-signed certificate at start when none is mounted (the gateway then
encrypts without verifying, an empty validation context). This module is the one place that makes, loads and checks
certificates and turns them into gRPC server credentials:

- `self_signed(hosts, now)`: an ECDSA P-256 key and a certificate for `hosts` (DNS names and IPs), valid from
  `now` for `days` (time is injected; made by `common/certs.py`, which the cluster twin's TLS shares);
- `load_pair(cert, key)`: PEM files read and checked (both parse, the key belongs to the certificate, the
  certificate is not expired at `now`); every problem raises `TLSError` naming the file;
- `client_credentials(target, ca_file, insecure)`: what a client (`autonomic picker explain`) dials with: the CA
  file's certificates, or, "insecure", the certificate the picker presents, fetched once and pinned (for the
  self-signed one, which nothing else could verify);
- `server_credentials(source)`: gRPC credentials that ask `source.fetch()` on every new connection, so a Secret
  rotated by cert-manager is served from the next connection on without a restart; a rotation that does not load
  keeps the last good pair and logs why.

The health-only port stays plaintext: the kubelet's gRPC probes do not speak TLS.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from common import certs

log = logging.getLogger("autonomic.picker.tls")

ORGANIZATION = "autonomic endpoint picker"


class TLSError(ValueError):
    """A certificate or key that cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class ServingCert:
    cert_pem: bytes
    key_pem: bytes
    origin: str  # "self-signed" or the certificate's path

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def self_signed(hosts: Sequence[str], now: datetime, days: int = 3650) -> ServingCert:
    """A new key and a self-signed serving certificate for `hosts` (the first one is the common name)."""
    pair = certs.self_signed(hosts, now, organization=ORGANIZATION, days=days)
    return ServingCert(pair.cert_pem, pair.key_pem, "self-signed")


def check_pair(cert_pem: bytes, key_pem: bytes, *, cert_name: str, key_name: str, now: datetime) -> None:
    """Raise `TLSError` unless both parse, the key matches the certificate and `now` is inside its validity."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise TLSError(f"{cert_name}: not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TLSError(f"{key_name}: not an unencrypted PEM private key ({exc})") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if key.public_key().public_bytes(pem, public) != cert.public_key().public_bytes(pem, public):
        raise TLSError(f"{key_name}: this key does not belong to the certificate {cert_name}")
    if now > cert.not_valid_after_utc:
        raise TLSError(f"{cert_name}: expired at {cert.not_valid_after_utc.isoformat()}")
    if now < cert.not_valid_before_utc:
        raise TLSError(f"{cert_name}: not valid before {cert.not_valid_before_utc.isoformat()}")


def load_pair(cert_path: Path, key_path: Path, now: datetime) -> ServingCert:
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise TLSError(f"{exc.filename}: {exc.strerror or exc}") from None
    check_pair(cert_pem, key_pem, cert_name=str(cert_path), key_name=str(key_path), now=now)
    return ServingCert(cert_pem, key_pem, str(cert_path))


class CertSource:
    """Where the served pair comes from: fixed (self-signed) or files re-read when their modification times change."""

    def __init__(
        self,
        initial: ServingCert,
        cert_path: Path | None = None,
        key_path: Path | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.current, self.now = initial, now
        self.cert_path, self.key_path = cert_path, key_path
        self._stamp = self._mtimes()
        self.reloads = 0

    @classmethod
    def from_files(
        cls, cert_path: Path, key_path: Path, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> CertSource:
        return cls(load_pair(cert_path, key_path, now()), cert_path, key_path, now)

    def _mtimes(self) -> tuple[int, int] | None:
        if self.cert_path is None or self.key_path is None:
            return None
        try:
            return self.cert_path.stat().st_mtime_ns, self.key_path.stat().st_mtime_ns
        except OSError:
            return None

    def fetch(self) -> ServingCert | None:
        """The new pair if the files changed and load, else None (keep serving the current one)."""
        if self.cert_path is None or self.key_path is None:
            return None
        stamp = self._mtimes()
        if stamp is None or stamp == self._stamp:
            return None
        try:
            pair = load_pair(self.cert_path, self.key_path, self.now())
        except TLSError as exc:  # half-written Secret update: the next connection tries again
            log.warning("certificate not reloaded, serving the previous one", extra={"error": str(exc)})
            return None
        self._stamp, self.current = stamp, pair
        self.reloads += 1
        log.info("certificate reloaded", extra={"cert": str(self.cert_path)})
        return pair


def _config(pair: ServingCert) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pair.key_pem, pair.cert_pem)])


def server_credentials(source: CertSource) -> grpc.ServerCredentials:
    def fetch() -> grpc.ServerCertificateConfiguration | None:
        pair = source.fetch()
        return None if pair is None else _config(pair)

    return grpc.dynamic_ssl_server_credentials(_config(source.current), fetch)


def presented_certificate(host: str, port: int, timeout_s: float = 5.0) -> bytes:
    """The PEM certificate a TLS server presents, read without verifying it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=timeout_s) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise TLSError(f"{host}:{port}: presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def name_in(cert_pem: bytes) -> str:
    """A name the certificate is valid for (its first DNS name, else its common name), to check it against."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return str(dns[0])
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


def client_credentials(
    target: str, ca_file: Path | None, insecure: bool, server_name: str | None = None
) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Credentials and channel options to dial `target` (HOST:PORT) over TLS; raises TLSError naming the problem."""
    if ca_file is not None:
        try:
            roots = ca_file.read_bytes()
        except OSError as exc:
            raise TLSError(f"{ca_file}: {exc.strerror or exc}") from None
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        return grpc.ssl_channel_credentials(root_certificates=roots), options
    if not insecure:
        raise TLSError("TLS needs a CA file or the insecure (pinned certificate) mode")
    host, _, port = target.rpartition(":")
    try:
        pem = presented_certificate(host.strip("[]"), int(port))
    except (OSError, ValueError) as exc:
        raise TLSError(f"{target}: cannot read its certificate: {exc}") from None
    name = server_name or name_in(pem)
    return grpc.ssl_channel_credentials(root_certificates=pem), [("grpc.ssl_target_name_override", name)]
