"""common/certs.py: the self-signed certificate the picker serves and the CA + issued certificate the cluster twin
serves over HTTPS (table-free: each property checked on freshly made certificates)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from common.certs import CLOCK_SKEW, certificate_authority, issue, self_signed

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName), [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_ca_can_sign_and_the_issued_certificate_verifies_against_it() -> None:
    ca = certificate_authority("test-ca", NOW, organization="o", days=10)
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf = issue(ca, ["127.0.0.1", "localhost", "::1"], NOW, organization="o", days=2)
    leaf.certificate.verify_directly_issued_by(ca.certificate)  # raises if not
    assert _sans(leaf.certificate) == (["localhost"], ["127.0.0.1", "::1"])
    assert not leaf.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.certificate.not_valid_before_utc == NOW - CLOCK_SKEW
    assert leaf.certificate.not_valid_after_utc == NOW + timedelta(days=2)
    assert leaf.private_key().public_key().public_numbers() == leaf.certificate.public_key().public_numbers()


def test_self_signed_is_its_own_issuer_and_not_a_ca() -> None:
    pair = self_signed(["picker.example", "10.0.0.1"], NOW, organization="o")
    cert = pair.certificate
    assert cert.issuer == cert.subject and _sans(cert) == (["picker.example"], ["10.0.0.1"])
    cert.verify_directly_issued_by(cert)
    with pytest.raises(ValueError, match="at least one host"):
        self_signed([], NOW, organization="o")
