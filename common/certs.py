"""X.509 certificates made at start: a self-signed serving certificate, or a small CA and certificates it issues.

Why it exists: two parts of the project make their own certificates. The picker serves gRPC over TLS with a
self-signed certificate when none is mounted (as GIE's endpoint picker does), and the cluster twin serves the
Kubernetes API over HTTPS (`cluster-sim --tls`) with a CA that kubeconfigs and in-cluster clients trust, since
client-go and kubectl verify the server against a CA. Both need ECDSA P-256 keys, SANs for DNS names and IPs,
validity from a given instant, and PEM encoding, so the making lives here once. Time is injected (`now`):
certificates are stamped with the wall clock the clients check them against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLOCK_SKEW = timedelta(minutes=5)  # valid from a little before `now`: tolerate a client clock slightly behind ours


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("expected an ECDSA private key")
        return key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _serving(
    hosts: Sequence[str], organization: str, now: datetime, days: int, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    if not hosts:
        raise ValueError("a serving certificate needs at least one host name")
    return (
        x509.CertificateBuilder()
        .subject_name(_name(organization, hosts[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )


def self_signed(hosts: Sequence[str], now: datetime, *, organization: str, days: int = 3650) -> CertPair:
    """A new key and a self-signed serving certificate for `hosts` (the first one is the common name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _serving(hosts, organization, now, days, key).issuer_name(_name(organization, hosts[0]))
    return _pair(builder.sign(key, hashes.SHA256()), key)


def certificate_authority(common_name: str, now: datetime, *, organization: str, days: int = 3650) -> CertPair:
    """A new self-signed CA (CA:TRUE, may sign certificates) to issue serving certificates with `issue`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(organization, common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pair(cert, key)


def issue(ca: CertPair, hosts: Sequence[str], now: datetime, *, organization: str, days: int = 365) -> CertPair:
    """A new key and a serving certificate for `hosts`, signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = ca.certificate
    builder = (
        _serving(hosts, organization, now, days, key)
        .issuer_name(ca_cert.subject)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key().public_key()), critical=False
        )
    )
    return _pair(builder.sign(ca.private_key(), hashes.SHA256()), key)
