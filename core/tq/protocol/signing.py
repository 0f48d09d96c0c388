"""Celery's ``auth`` serializer: task bodies signed with an X.509 key (RELIABILITY.md S9).

The wire layout is Celery's (``celery.security.serialization``), so either side can sign and
the other verify. The payload of a message with content type ``application/data`` is::

    base64( base64(signer) \\x00\\x01 base64(signature) \\x00\\x01 content_type
            \\x00\\x01 content_encoding \\x00\\x01 inner_body )

where ``signer`` is the certificate id (``"<issuer attribute values> <serial>"``), the
signature is RSA-PSS (MGF1, maximum salt length) over ``inner_body`` with ``security_digest``,
and ``inner_body`` is the body as the inner serializer (JSON by default) wrote it. The
signature is checked before the inner body is parsed.

``cryptography`` is optional: it is imported only when a signer is built, and its absence is a
``ConfigurationError`` saying what to install.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import glob
import logging
import os
from typing import Any

from tq.exceptions import ConfigurationError, DecodeError, ProtocolError
from tq.protocol import serializers

logger = logging.getLogger(__name__)

#: The content type Celery registers the ``auth`` serializer under.
AUTH = serializers.AUTH
#: Field separator; it never occurs in base64 text or in the inner JSON.
SEPARATOR = b"\x00\x01"
#: Inner serializers a signed body may use (pickle is never decoded, signed or not).
INNER_ALLOWED = frozenset({serializers.JSON, serializers.MSGPACK})

CRYPTOGRAPHY_MISSING = (
    "the auth serializer (message signing) needs the cryptography package: "
    "pip install cryptography (or pip install 'tq[security]')"
)


class SignatureError(DecodeError):
    """A signed body that is unsigned, tampered with, or signed by an unknown or expired
    certificate. A ``ProtocolError``: the worker dead-letters the message."""


def _crypto() -> Any:
    try:
        from cryptography import exceptions, x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError as exc:
        raise ConfigurationError(CRYPTOGRAPHY_MISSING) from exc
    return exceptions, x509, hashes, serialization, padding, rsa


def _read(path_or_pem: str | bytes, what: str) -> bytes:
    """PEM text given directly, or read from a file path."""
    if isinstance(path_or_pem, bytes):
        data = path_or_pem
    elif "-----BEGIN" in path_or_pem:
        data = path_or_pem.encode("ascii")
    else:
        try:
            with open(path_or_pem, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {what} {path_or_pem!r}: {exc}") from exc
    return data


class Certificate:
    """An RSA X.509 certificate, identified as Celery identifies it."""

    def __init__(self, pem: bytes) -> None:
        exceptions, x509, _h, _s, padding, rsa = _crypto()
        self._invalid = exceptions.InvalidSignature
        try:
            self._cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise ConfigurationError(f"invalid certificate: {exc}") from exc
        key = self._cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigurationError("only RSA certificates are supported (as in Celery)")
        self._key = key
        self._padding = padding
        self.id = " ".join(str(a.value) for a in self._cert.issuer) + f" {self._cert.serial_number}"

    @property
    def not_after(self) -> dt.datetime:
        return self._cert.not_valid_after_utc  # type: ignore[no-any-return]

    def has_expired(self) -> bool:
        return dt.datetime.now(dt.UTC) >= self.not_after

    def verify(self, data: bytes, signature: bytes, digest: Any) -> None:
        """Raises ``SignatureError`` for an expired certificate or a bad signature."""
        if self.has_expired():
            raise SignatureError(f"signed by an expired certificate {self.id!r}")
        pad = self._padding.PSS(
            mgf=self._padding.MGF1(digest), salt_length=self._padding.PSS.MAX_LENGTH
        )
        try:
            self._key.verify(signature, data, pad, digest)
        except (self._invalid, ValueError, TypeError) as exc:
            raise SignatureError(
                f"bad signature (certificate {self.id!r}): the body was altered or signed "
                "with another key"
            ) from exc


def load_cert_store(path: str) -> dict[str, Certificate]:
    """Certificates from a directory, a file or a glob pattern, by id.

    Expired certificates are kept (with a warning) so a message they signed is refused with
    a reason that says so."""
    pattern = os.path.join(path, "*") if os.path.isdir(path) else path
    store: dict[str, Certificate] = {}
    for name in sorted(glob.glob(pattern)):
        if os.path.isdir(name):
            continue
        cert = Certificate(_read(name, "certificate"))
        if cert.id in store:
            raise ConfigurationError(f"duplicate certificate {cert.id!r} in {path!r}")
        if cert.has_expired():
            logger.warning("Certificate %r in %s has expired; it verifies nothing", cert.id, name)
        store[cert.id] = cert
    if not store:
        raise ConfigurationError(f"security_cert_store {path!r} holds no certificate")
    return store


class Signer:
    """Signs bodies with a private key and verifies them against a certificate store."""

    def __init__(
        self,
        key: str | bytes,
        cert: str | bytes,
        store: str | dict[str, Certificate],
        digest: str = "sha256",
        key_password: str | bytes | None = None,
        serializer: str = "json",
    ) -> None:
        _exc, _x509, hashes, serialization, padding, rsa = _crypto()
        password = key_password.encode() if isinstance(key_password, str) else key_password
        try:
            self._key = serialization.load_pem_private_key(_read(key, "key"), password=password)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid security_key: {exc}") from exc
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise ConfigurationError("only RSA keys are supported (as in Celery)")
        self.cert = Certificate(_read(cert, "certificate"))
        self.store = store if isinstance(store, dict) else load_cert_store(store)
        algorithm = getattr(hashes, str(digest).upper().replace("-", ""), None)
        if not isinstance(algorithm, type) or not issubclass(algorithm, hashes.HashAlgorithm):
            raise ConfigurationError(f"unknown security_digest {digest!r}")
        self.digest = algorithm()
        self._pad = padding.PSS(mgf=padding.MGF1(self.digest), salt_length=padding.PSS.MAX_LENGTH)
        self._signer_b64 = base64.b64encode(self.cert.id.encode("utf-8"))
        self.inner = serializers.content_type_of(serializer)
        if self.inner not in INNER_ALLOWED:
            raise ConfigurationError(f"the auth serializer cannot wrap {serializer!r}")

    def dumps(self, value: Any) -> bytes:
        ser = serializers.SERIALIZERS[self.inner]
        body = ser.dumps(value)
        try:
            signature = self._key.sign(body, self._pad, self.digest)
        except Exception as exc:
            raise ProtocolError(f"cannot sign the message: {exc}") from exc
        fields = SEPARATOR.join(
            (
                self._signer_b64,
                base64.b64encode(signature),
                ser.content_type.encode("ascii"),
                ser.encoding.encode("ascii"),
                body,
            )
        )
        return base64.b64encode(fields)

    def loads(self, payload: bytes) -> Any:
        """Verify, then decode. Raises ``SignatureError`` / ``DecodeError``."""
        try:
            raw = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"not a signed body (bad base64): {exc}") from exc
        parts = raw.split(SEPARATOR, 4)
        if len(parts) != 5:
            raise SignatureError("not a signed body (expected 5 fields)")
        try:
            signer = base64.b64decode(parts[0]).decode("utf-8")
            signature = base64.b64decode(parts[1])
            ctype = parts[2].decode("ascii")
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"not a signed body: {exc}") from exc
        body = parts[4]
        cert = self.store.get(signer)
        if cert is None:
            raise SignatureError(f"signed by an unknown certificate {signer!r}")
        cert.verify(body, signature, self.digest)
        if ctype not in INNER_ALLOWED:
            raise SignatureError(f"signed body of type {ctype!r} is not decoded")
        return serializers.SERIALIZERS[ctype].loads(body)


def register(signer: Signer) -> None:
    """Make ``signer`` the process's ``auth`` serializer (global, as in Celery)."""
    serializers.SERIALIZERS[AUTH] = serializers.Serializer(
        AUTH, "utf-8", signer.dumps, signer.loads
    )


def unregister() -> None:
    serializers.SERIALIZERS.pop(AUTH, None)


def is_registered() -> bool:
    return AUTH in serializers.SERIALIZERS
