"""Throwaway RSA keys and self-signed X.509 certificates for the message-signing tests (S9).

Needs ``cryptography`` (in the ``test`` extra). Nothing here is a real secret.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    """A key and its certificate, written to ``key`` and ``cert``."""

    name: str
    key: Path
    cert: Path


def make_identity(
    folder: Path,
    name: str,
    *,
    expired: bool = False,
    password: bytes | None = None,
    serial: int | None = None,
) -> Identity:
    """A fresh 2048-bit RSA key and a self-signed certificate for it, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tq tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    if expired:
        start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
    else:
        start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_path = folder / f"{name}.key"
    cert_path = folder / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(name, key_path, cert_path)


def make_store(folder: Path, *identities: Identity) -> Path:
    """A certificate-store folder holding the certificates of ``identities``."""
    folder.mkdir(parents=True, exist_ok=True)
    for ident in identities:
        (folder / ident.cert.name).write_bytes(ident.cert.read_bytes())
    return folder
