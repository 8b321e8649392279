"""scorer.extproc.tls: the self-signed certificate's contents and the checks on a provided pair (table-driven)."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from scorer.extproc.tls import CertSource, TLSError, check_pair, load_pair, self_signed

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_self_signed_names_every_host_and_is_valid_now():
    pair = self_signed(["localhost", "picker-0", "127.0.0.1", "localhost"], NOW, days=30)
    cert = pair.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "picker-0"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert pair.origin == "self-signed"
    check_pair(pair.cert_pem, pair.key_pem, cert_name="c", key_name="k", now=NOW)
    with pytest.raises(ValueError):
        self_signed([], NOW)


A = self_signed(["a"], NOW, days=10)
B = self_signed(["b"], NOW, days=10)
CASES = [  # (cert, key, now, expected message part)
    (A.cert_pem, B.key_pem, NOW, "does not belong to the certificate"),
    (A.cert_pem, A.key_pem, NOW + timedelta(days=11), "expired at"),
    (A.cert_pem, A.key_pem, NOW - timedelta(days=1), "not valid before"),
    (b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n", A.key_pem, NOW, "not a PEM certificate"),
    (A.cert_pem, A.cert_pem, NOW, "not an unencrypted PEM private key"),
    (A.key_pem, A.key_pem, NOW, "not a PEM certificate"),
]


@pytest.mark.parametrize(("cert", "key", "now", "expected"), CASES)
def test_bad_pairs_are_refused_with_the_file_named(cert: bytes, key: bytes, now: datetime, expected: str):
    with pytest.raises(TLSError) as exc:
        check_pair(cert, key, cert_name="tls.crt", key_name="tls.key", now=now)
    assert expected in str(exc.value) and ("tls.crt" in str(exc.value) or "tls.key" in str(exc.value))


def test_source_reloads_only_a_changed_pair_that_loads(tmp_path: Path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(A.cert_pem)
    key.write_bytes(A.key_pem)
    source = CertSource.from_files(cert, key, now=lambda: NOW)
    assert source.fetch() is None  # unchanged
    key.write_bytes(B.key_pem)  # half a rotation: the key no longer matches
    _bump(cert, key, 1)
    assert source.fetch() is None and source.current.cert_pem == A.cert_pem
    cert.write_bytes(B.cert_pem)
    _bump(cert, key, 2)
    assert source.fetch() == load_pair(cert, key, NOW) and source.reloads == 1
    with pytest.raises(TLSError, match="missing"):
        load_pair(tmp_path / "missing", key, NOW)


def _bump(cert: Path, key: Path, seconds: int) -> None:
    """New modification times (file times are wall-clock; the certificates' validity uses the injected NOW)."""
    stamp = datetime.now(UTC).timestamp() + seconds
    for path in (cert, key):
        os.utime(path, (stamp, stamp))
