"""Device authentication on the relay's wire API (SPEC.md §10.7).

Each request carries an ``authorization: E2E-Device <token>`` header, ``token`` the unpadded
base64url of the CBOR map ``{0: 1, 1: account, 2: device id, 3: unix time (s), 4: nonce
(16 bytes), 5: signature (64), 6: SHA-256(body)}``, where the signature is an XEdDSA
signature by the device identity key (the key its account's certificate vouches for,
SPEC §10.1) over::

    "E2E_RELAY_AUTH_v1" | CBOR {0: 1, 1: method, 2: path, 3: SHA-256(body), 4: account,
                                5: device id, 6: time, 7: nonce}

The relay accepts a request only if the device is registered (or, for device registration,
the certificate in the body verifies under the account key), the signature verifies, the time
is within :data:`AUTH_SKEW` seconds of its own, and the (account, device, nonce) triple was not
seen before (nonces are kept until they expire).

The token carries the body's digest, which the signature covers, so the relay verifies the
signature *before* it reads the body (SPEC §10.7: a body is buffered only for a device that
proved who it is), then hashes the body as it reads it and compares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from e2e import xeddsa
from e2e.errors import DecodeError, E2EError, Unauthenticated
from e2e.keys import KeyPair
from e2e.platform.wire.codec import F, decode_body, encode_body

__all__ = [
    "AUTH_SCHEME",
    "AUTH_LABEL",
    "AUTH_SKEW",
    "NONCE_LEN",
    "AuthToken",
    "auth_message",
    "body_digest",
    "sign_request",
    "parse_auth",
    "AUTH_TOKEN_SCHEMA",
]

AUTH_SCHEME: Final = "E2E-Device"
AUTH_LABEL: Final = b"E2E_RELAY_AUTH_v1"
#: A request's time may differ from the relay's by at most this many seconds.
AUTH_SKEW: Final = 300
NONCE_LEN: Final = 16
#: Longest header value the relay reads.
_MAX_HEADER: Final = 512


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def auth_message(method: str, path: str, digest: bytes, account: bytes, device_id: int,
                 timestamp: int, nonce: bytes) -> bytes:  # fmt: skip
    """The bytes a device signs for one request."""
    return AUTH_LABEL + encode_body({0: 1, 1: method.encode("ascii"), 2: path.encode("ascii"),
                                     3: digest, 4: account, 5: device_id, 6: timestamp,
                                     7: nonce})  # fmt: skip


#: The token's map (its CDDL rule is auth-token in SPEC-wire.cddl).
AUTH_TOKEN_SCHEMA: Final = {
    1: F(bytes, 1, 64),
    2: F(int, max_int=2**32 - 1),
    3: F(int),
    4: F(bytes, NONCE_LEN, NONCE_LEN),
    5: F(bytes, 64, 64),
    6: F(bytes, 32, 32),
}


@dataclass(frozen=True, slots=True)
class AuthToken:
    """The decoded ``authorization`` header of one request."""

    account: bytes
    device_id: int
    timestamp: int
    nonce: bytes
    signature: bytes
    #: SHA-256 of the request body, as signed.
    digest: bytes

    def to_header(self) -> str:
        raw = encode_body({0: 1, 1: self.account, 2: self.device_id, 3: self.timestamp,
                           4: self.nonce, 5: self.signature, 6: self.digest})  # fmt: skip
        return f"{AUTH_SCHEME} " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, identity: bytes, method: str, path: str, body: bytes | None = None) -> None:
        """:class:`Unauthenticated` unless signed by ``identity`` for this method, path and
        the token's body digest; and, if ``body`` is given, unless that is its digest (the
        relay checks the signature first and the body as it reads it: :meth:`check_digest`)."""
        msg = auth_message(method, path, self.digest, self.account, self.device_id,
                           self.timestamp, self.nonce)  # fmt: skip
        try:
            xeddsa.verify(identity, msg, self.signature)
        except E2EError:
            raise Unauthenticated("request signature does not verify") from None
        if body is not None:
            self.check_digest(body_digest(body))

    def check_digest(self, digest: bytes) -> None:
        """:class:`Unauthenticated` unless ``digest`` (of the body received) is the signed one."""
        if not hmac.compare_digest(digest, self.digest):
            raise Unauthenticated("request body differs from the signed one")


def sign_request(identity: KeyPair, account: bytes, device_id: int, method: str, path: str,
                 body: bytes, timestamp: int,
                 rng: Callable[[int], bytes] = os.urandom) -> str:  # fmt: skip
    """The ``authorization`` header value for one request by this device."""
    nonce = rng(NONCE_LEN)
    msg = auth_message(method, path, body_digest(body), account, device_id, timestamp, nonce)
    sig = xeddsa.sign(identity.private_bytes(), msg, rng(64))
    return AuthToken(account, device_id, timestamp, nonce, sig, body_digest(body)).to_header()


def parse_auth(header: str | None) -> AuthToken:
    """Decode an ``authorization`` header; :class:`Unauthenticated` if absent or malformed."""
    if not header:
        raise Unauthenticated("request is not authenticated")
    scheme, _, value = header.partition(" ")
    if scheme != AUTH_SCHEME or not value or len(value) > _MAX_HEADER:
        raise Unauthenticated("unknown authorization scheme")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != value:
            raise DecodeError("non-canonical base64")
        obj = decode_body(raw, AUTH_TOKEN_SCHEMA, "authorization", _MAX_HEADER)
    except (E2EError, ValueError):
        raise Unauthenticated("malformed authorization header") from None
    return AuthToken(obj[1], obj[2], obj[3], obj[4], obj[5], obj[6])
