"""The ``auth`` serializer (RELIABILITY.md S9): Celery's signed-body layout, both ways, and
every refusal (unsigned, tampered, unknown signer, expired certificate, forged id)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._certs import Identity, make_identity, make_store

from tq import App
from tq.exceptions import ConfigurationError, ContentDisallowed, ProtocolError
from tq.protocol import serializers, signing
from tq.protocol.serializers import AUTH, JSON
from tq.protocol.signing import SEPARATOR, SignatureError, Signer

BODY = [[2, 3], {"x": "é", "n": None}, {"callbacks": None, "errbacks": None,
                                      "chain": None, "chord": None}]


@pytest.fixture(autouse=True)
def _no_global_auth() -> Iterator[None]:
    yield
    signing.unregister()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity | Path]:
    root = tmp_path_factory.mktemp("certs")
    alice = make_identity(root / "keys", "alice")
    bob = make_identity(root / "keys", "bob")
    old = make_identity(root / "keys", "old", expired=True)
    locked = make_identity(root / "keys", "locked", password=b"s3cret")
    store = make_store(root / "store", alice, old, locked)
    return {"alice": alice, "bob": bob, "old": old, "locked": locked, "store": store}


def signer_for(certs: dict[str, Identity | Path], name: str, **kw: object) -> Signer:
    ident = certs[name]
    assert isinstance(ident, Identity)
    return Signer(str(ident.key), str(ident.cert), str(certs["store"]), **kw)  # type: ignore[arg-type]


def fields(payload: bytes) -> list[bytes]:
    return base64.b64decode(payload).split(SEPARATOR, 4)


def test_round_trip_and_celery_layout(certs: dict[str, Identity | Path]) -> None:
    signer = signer_for(certs, "alice")
    payload = signer.dumps(BODY)
    assert signer.loads(payload) == BODY
    signer_b64, _sig, ctype, cenc, body = fields(payload)
    assert base64.b64decode(signer_b64).decode() == signer.cert.id
    assert signer.cert.id.startswith("tq tests alice ")
    assert (ctype, cenc) == (b"application/json", b"utf-8")
    assert serializers.loads_json(body) == BODY


def test_celery_reads_what_tq_signs_and_tq_reads_what_celery_signs(
    certs: dict[str, Identity | Path],
) -> None:
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    alice = certs["alice"]
    assert isinstance(alice, Identity)
    celery = SecureSerializer(
        PrivateKey(alice.key.read_text()),
        Certificate(alice.cert.read_text()),
        FSCertStore(str(certs["store"] / alice.cert.name)),  # type: ignore[operator]
        "sha256",
    )
    tq_signer = signer_for(certs, "alice")
    assert celery.deserialize(tq_signer.dumps(BODY).decode()) == BODY
    from_celery = celery.serialize(BODY)
    assert tq_signer.loads(from_celery.encode()) == BODY


def test_app_send_path_signs_with_application_data(
    certs: dict[str, Identity | Path],
) -> None:
    alice = certs["alice"]
    assert isinstance(alice, Identity)
    app = App("signing", set_as_current=False, security_key=str(alice.key),
              security_certificate=str(alice.cert), security_cert_store=str(certs["store"]))
    app.setup_security()
    assert app.conf.task_serializer == "auth" and app.conf.accept_content == ["auth"]
    assert app.accept_content == frozenset({AUTH})
    ctype, cenc, payload = serializers.dumps(BODY, app.send_defaults().serializer)
    assert (ctype, cenc) == (AUTH, "utf-8")
    assert serializers.loads(payload, AUTH, app.accept_content) == BODY


def test_flipping_one_body_byte_is_refused(certs: dict[str, Identity | Path]) -> None:
    signer = signer_for(certs, "alice")
    parts = fields(signer.dumps(BODY))
    body = bytearray(parts[4])
    body[3] ^= 0x01
    parts[4] = bytes(body)
    with pytest.raises(SignatureError, match="bad signature"):
        signer.loads(base64.b64encode(SEPARATOR.join(parts)))


def test_unknown_signer_is_refused(certs: dict[str, Identity | Path]) -> None:
    payload = signer_for(certs, "bob").dumps(BODY)  # bob's certificate is not in the store
    with pytest.raises(SignatureError, match="unknown certificate"):
        signer_for(certs, "alice").loads(payload)


def test_forged_certificate_id_is_refused(
    certs: dict[str, Identity | Path], tmp_path: Path
) -> None:
    alice = certs["alice"]
    assert isinstance(alice, Identity)
    # Mallory's own key, claiming to be alice: same certificate id, another key.
    mallory = Signer(str(make_identity(tmp_path, "mallory").key), str(alice.cert),
                     str(certs["store"]))
    with pytest.raises(SignatureError, match="bad signature"):
        signer_for(certs, "alice").loads(mallory.dumps(BODY))


def test_expired_certificate_is_refused(certs: dict[str, Identity | Path]) -> None:
    payload = signer_for(certs, "old").dumps(BODY)
    with pytest.raises(SignatureError, match="expired"):
        signer_for(certs, "alice").loads(payload)


def test_unsigned_and_garbage_bodies_are_refused(certs: dict[str, Identity | Path]) -> None:
    signing.register(signer_for(certs, "alice"))
    accept = serializers.normalize_accept(["auth"])
    with pytest.raises(ContentDisallowed):
        serializers.loads(serializers.dumps_json(BODY).encode(), JSON, accept)
    for garbage in (b"", b"!!!", base64.b64encode(b"a\x00\x01b"),
                    base64.b64encode(serializers.dumps_json(BODY).encode())):
        with pytest.raises(SignatureError):
            serializers.loads(garbage, AUTH, accept)


def test_encrypted_key_and_digest(certs: dict[str, Identity | Path]) -> None:
    signer = signer_for(certs, "locked", key_password="s3cret", digest="sha512")
    assert signer.loads(signer.dumps(BODY)) == BODY
    with pytest.raises(SignatureError):  # a sha256 verifier refuses a sha512 signature
        signer_for(certs, "alice").loads(signer.dumps(BODY))
    with pytest.raises(ConfigurationError, match="security_key"):
        signer_for(certs, "locked", key_password="wrong")
    with pytest.raises(ConfigurationError, match="digest"):
        signer_for(certs, "alice", digest="nosuch")


def test_missing_settings_and_unset_serializer_are_clear_errors() -> None:
    app = App("signing", set_as_current=False, task_serializer="auth")
    with pytest.raises(ConfigurationError, match="security_key"):
        app.setup_security()
    with pytest.raises(ConfigurationError, match="security_cert_store"):
        app.send_defaults()
    with pytest.raises(ProtocolError, match="setup_security"):
        serializers.dumps(BODY, "auth")
    with pytest.raises(ContentDisallowed, match="not set up"):
        serializers.loads(b"x", AUTH, frozenset({AUTH}))


def test_security_settings_are_masked() -> None:
    app = App("signing", set_as_current=False, security_key="/k.pem",
              security_key_password="pw", CELERY_SECURITY_CERTIFICATE="/c.pem")
    masked = app.conf.masked()
    assert masked["security_key"] == "********"
    assert masked["security_key_password"] == "********"
    assert app.conf.security_certificate == "/c.pem"
    assert app.conf.security_digest == "sha256"


def test_tq_imports_and_runs_without_cryptography_and_auth_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "import tq, tq.worker.runtime, tq.protocol.signing\n"
        "from tq import App\n"
        "from tq.protocol import serializers\n"
        "assert serializers.loads(serializers.dumps([1])[2], 'application/json',"
        " frozenset({'application/json'})) == [1]\n"
        "app = App('x', set_as_current=False, security_key='k', security_certificate='c',"
        " security_cert_store='s')\n"
        "try:\n"
        "    app.setup_security()\n"
        "except tq.exceptions.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert "pip install cryptography" in out.stdout, out.stderr
