"""The validity dates of an X.509 certificate, read from its DER bytes.

Why a DER walker instead of ``SSLSocket.getpeercert()``: the stdlib only
decodes a certificate it has verified, and the certificates an operator most
needs to watch are the ones that no longer verify (expired) or never did
(an internal CA the daemon is not told about). ``cryptography`` would do it,
but is not a runtime dependency; the path to ``validity`` is five fixed
steps into the structure (RFC 5280 4.1), which needs no general parser.
"""

from __future__ import annotations

import calendar
import time

_SEQUENCE = 0x30
_EXPLICIT_VERSION = 0xA0
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


class CertificateError(ValueError):
    """The bytes are not a certificate we can read the dates of."""


def _header(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise CertificateError("truncated DER element")
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise CertificateError("unsupported DER length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    if at + length > len(data):
        raise CertificateError("DER element runs past the end of the data")
    return tag, at, at + length


def _parse_time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii")
    if not text.endswith("Z"):
        raise CertificateError(f"certificate time {text!r} is not in UTC")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise CertificateError(f"unexpected tag 0x{tag:02x} where a time belongs")
    try:
        parsed = time.strptime(text[:14], "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise CertificateError(f"bad certificate time {text!r}") from exc
    return float(calendar.timegm(parsed))


def validity(der: bytes) -> tuple[float, float]:
    """(not_before, not_after) as Unix timestamps."""
    tag, start, _ = _header(der, 0)  # Certificate ::= SEQUENCE
    if tag != _SEQUENCE:
        raise CertificateError("not a DER certificate")
    tag, at, _ = _header(der, start)  # tbsCertificate ::= SEQUENCE
    if tag != _SEQUENCE:
        raise CertificateError("no tbsCertificate")
    tag, _, end = _header(der, at)
    if tag == _EXPLICIT_VERSION:  # [0] version, absent in v1 certificates
        at = end
    for _skipped in ("serialNumber", "signature", "issuer"):
        _, _, at = _header(der, at)
    tag, at, _ = _header(der, at)  # validity ::= SEQUENCE { notBefore, notAfter }
    if tag != _SEQUENCE:
        raise CertificateError("no validity in the certificate")
    tag, start, end = _header(der, at)
    not_before = _parse_time(tag, der[start:end])
    tag, start, end = _header(der, end)
    return not_before, _parse_time(tag, der[start:end])
