"""Pure parts of the network probes: certificate dates, status ranges, params, redirect policy."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from watchdogd.families.net.probes import PROBES, HttpParams, HttpProbe
from watchdogd.families.net.x509dates import CertificateError, validity
from watchdogd.model import Unit


def certificate_der(not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test.invalid")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.datetime(2024, 4, 1, 12, 0, 0, tzinfo=dt.UTC)),
        # After 2049 certificates carry GeneralizedTime instead of UTCTime.
        (dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), dt.datetime(2051, 6, 1, 0, 0, 1, tzinfo=dt.UTC)),
    ],
)
def test_validity_matches_cryptography(before: dt.datetime, after: dt.datetime) -> None:
    der = certificate_der(before, after)
    cert = x509.load_der_x509_certificate(der)
    assert validity(der) == (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01", b"\x04\x02ab", b"\x30\x82\xff\xff" + b"\0" * 10])
def test_validity_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(CertificateError):
        validity(garbage)


def test_units() -> None:
    assert {PROBES[name].unit for name in ("net.tcp", "net.http", "net.tls_cert")} == {Unit.SECONDS}


@pytest.mark.parametrize(
    ("raw", "ranges"),
    [
        (200, [(200, 200)]),
        ("2xx", [(200, 299)]),
        (["200-204", 301, "4xx"], [(200, 204), (301, 301), (400, 499)]),
    ],
)
def test_expect_status(raw: Any, ranges: list[tuple[int, int]]) -> None:
    assert HttpParams.model_validate({"url": "http://x/", "expect_status": raw}).expect_status == ranges


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"url": "ftp://x/"}, "expected an http:// or https:// URL"),
        ({"url": "http:///path"}, "expected an http:// or https:// URL"),
        ({"url": "http://x:99999/"}, "bad port"),
        ({"url": "http://x/", "expect_status": "6xx"}, "expected a status like"),
        ({"url": "http://x/", "expect_status": "300-200"}, "ends before it starts"),
        ({"url": "http://x/", "body_regex": "(("}, "not a valid regular expression"),
        ({"url": "http://x/", "method": "HEAD", "body_regex": "ok"}, "needs method GET"),
        ({"url": "http://x/", "headers": {"X-Bad": "a\r\nInjected: 1"}}, "invalid header"),
        ({"url": "http://x/", "timeout": "0s"}, "greater than 0"),
    ],
)
def test_http_params_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpParams.model_validate(params)


@pytest.mark.parametrize(
    ("policy", "current", "target", "refused"),
    [
        ("same_host", "http://app.local/health", "http://app.local/healthz", None),
        ("same_host", "http://app.local/health", "https://APP.local/health", None),
        ("same_host", "http://app.local/health", "http://evil.example/", "another host"),
        ("same_host", "https://app.local/health", "http://app.local/health", "a downgrade"),
        ("same_host", "http://app.local/", "file:///etc/passwd", "not an http(s) URL"),
        ("any", "http://app.local/health", "http://other.example/", None),
    ],
)
def test_redirect_policy(policy: str, current: str, target: str, refused: str | None) -> None:
    probe = HttpProbe(HttpParams.model_validate({"url": current, "redirects": policy}), time.time)
    verdict = probe._refuse_redirect(current, target)
    assert (verdict is None) if refused is None else (verdict is not None and refused in verdict)
