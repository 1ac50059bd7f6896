"""RFC 4226 / RFC 6238 vectors, input checks, the key URI and the QR code."""

from __future__ import annotations

import base64
import hashlib
import io
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
import zxingcpp
from PIL import Image

from twofa import totp
from twofa.errors import InvalidInput, MalformedCode

RFC4226_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC4226_CODES = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]

RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
SEEDS = {
    hashlib.sha1: b"12345678901234567890",
    hashlib.sha256: b"12345678901234567890123456789012",
    hashlib.sha512: b"1234567890" * 6 + b"1234",
}


@pytest.mark.parametrize("counter", range(10))
def test_rfc4226_hotp_vectors(counter: int) -> None:
    assert totp.code_at_step(RFC4226_SECRET, counter) == RFC4226_CODES[counter]


@pytest.mark.parametrize(("unix", "sha1", "sha256", "sha512"), RFC6238)
def test_rfc6238_vectors(unix: int, sha1: str, sha256: str, sha512: str) -> None:
    for digest, expected in ((hashlib.sha1, sha1), (hashlib.sha256, sha256), (hashlib.sha512, sha512)):
        secret = base64.b32encode(SEEDS[digest]).decode()
        assert pyotp.TOTP(secret, digits=8, digest=digest).at(unix) == expected
    # Our 6-digit SHA1 codes are the last six digits of the 8-digit vectors (same HOTP value, mod 10^6).
    at = datetime.fromtimestamp(unix, UTC)
    assert totp.code_at(base64.b32encode(SEEDS[hashlib.sha1]).decode(), at) == sha1[-6:]


def test_window_accepts_one_step_either_side_only() -> None:
    secret = totp.new_secret()
    at = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    step = totp.time_step(at)
    for offset in (-1, 0, 1):
        assert totp.matching_step(secret, totp.code_at_step(secret, step + offset), at) == step + offset
    for offset in (-2, 2):
        code = totp.code_at_step(secret, step + offset)
        if code not in {totp.code_at_step(secret, step + o) for o in (-1, 0, 1)}:
            assert totp.matching_step(secret, code, at) is None


def test_secret_is_160_bits_unpadded_base32() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32 and "=" not in secret
    assert len(base64.b32decode(secret)) == 20
    assert totp.new_secret() != secret


@pytest.mark.parametrize(
    "bad",
    [
        "12345",
        "1234567",
        "12345a",
        " 123456",
        "123456 ",
        "１２３４５６",
        "١٢٣٤٥٦",
        "12 456",
        "",
        None,
        123456,
        "+12345",
    ],
)
def test_malformed_codes_are_refused_before_pyotp(bad: object) -> None:
    with pytest.raises(MalformedCode):
        totp.check_code_format(bad)


def test_full_width_digits_of_a_valid_code_are_refused() -> None:
    secret = totp.new_secret()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    code = totp.code_at(secret, at)
    full_width = "".join(chr(ord(c) - ord("0") + ord("０")) for c in code)
    assert pyotp.TOTP(secret).verify(full_width, for_time=at)  # what pyotp alone would do
    with pytest.raises(MalformedCode):
        totp.matching_step(secret, full_width, at)


def test_provisioning_uri_follows_key_uri_format() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice@example.com", "Wevion")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    assert unquote(parsed.path) == "/Wevion:alice@example.com"
    query = parse_qs(parsed.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Wevion"]
    for default_param in ("digits", "period", "algorithm"):
        assert query.get(default_param, [None])[0] in (
            None,
            {"digits": "6", "period": "30", "algorithm": "SHA1"}[default_param],
        )


@pytest.mark.parametrize(("account", "issuer"), [("a:b@example.com", "Wevion"), ("a@example.com", "Wev:ion")])
def test_colons_are_refused_in_the_label(account: str, issuer: str) -> None:
    with pytest.raises(InvalidInput):
        totp.provisioning_uri(totp.new_secret(), account, issuer)


def test_qr_png_decodes_to_exactly_the_uri() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), "bob+tag@example.com", "Wevion")
    png = totp.qr_png(uri)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert [r.text for r in results] == [uri]
    assert totp.png_data_url(png).startswith("data:image/png;base64,")
