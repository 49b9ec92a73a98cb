"""libsignal's message wire format: SignalMessage and PreKeySignalMessage (SPEC.md §15).

A SignalMessage is ``version byte || protobuf SignalMessage || MAC (8 bytes)``; the version byte
is ``(session version << 4) | 4`` (libsignal writes its current version, 4, in the low nibble),
the MAC is HMAC-SHA256(MAC key, Encode_EC(sender identity) || Encode_EC(receiver identity) ||
version byte || protobuf) truncated to 8 bytes. A PreKeySignalMessage is ``version byte ||
protobuf PreKeySignalMessage`` and carries a whole SignalMessage in its ``message`` field.
Public keys travel serialized: 0x05 || 32-byte X25519 key (0x08 || 1568 bytes for Kyber-1024).
"""

from __future__ import annotations

import hmac as _hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes, hmac

from e2e.errors import DecodeError, InvalidKey, UnsupportedVersion
from e2e.libsignal import proto
from e2e.libsignal.kyber import parse_ciphertext

__all__ = [
    "EC_TYPE",
    "VERSION_X3DH",
    "VERSION_PQXDH",
    "MAC_LEN",
    "WHISPER_TYPE",
    "PREKEY_TYPE",
    "MAX_MESSAGE_BYTES",
    "serialize_ec",
    "parse_ec",
    "SignalMessage",
    "PreKeySignalMessage",
    "encode_signal_message",
    "encode_prekey_message",
    "parse_signal_message",
    "parse_prekey_message",
    "message_mac",
]

EC_TYPE: Final = 0x05
#: Session versions: 3 = X3DH (legacy, opt-in), 4 = PQXDH with Kyber-1024 (default).
VERSION_X3DH: Final = 3
VERSION_PQXDH: Final = 4
_WRITER_VERSION: Final = 4
MAC_LEN: Final = 8
#: libsignal's CiphertextMessageType values.
WHISPER_TYPE: Final = 2
PREKEY_TYPE: Final = 3
#: Largest libsignal message accepted, checked before any decoding.
MAX_MESSAGE_BYTES: Final = 272 * 1024

_SIGNAL_SCHEMA: Final[tuple[tuple[int, proto.Kind], ...]] = (
    (1, proto.BYTES),  # ratchet_key
    (2, proto.UINT32),  # counter
    (3, proto.UINT32),  # previous_counter
    (4, proto.BYTES),  # ciphertext
    (5, proto.BYTES),  # pq_ratchet (SPQR, e2e.libsignal.spqr; written only when not empty)
    (6, proto.BYTES),  # addresses (newer libsignal; never written by us, ignored when read)
)
_PREKEY_SCHEMA: Final[tuple[tuple[int, proto.Kind], ...]] = (
    (1, proto.UINT32),  # pre_key_id
    (2, proto.BYTES),  # base_key
    (3, proto.BYTES),  # identity_key
    (4, proto.BYTES),  # message
    (5, proto.UINT32),  # registration_id
    (6, proto.UINT32),  # signed_pre_key_id
    (7, proto.UINT32),  # kyber_pre_key_id
    (8, proto.BYTES),  # kyber_ciphertext
)
_SHA256 = hashes.SHA256()


def serialize_ec(public: bytes) -> bytes:
    """0x05 || the 32-byte X25519 public key."""
    return bytes((EC_TYPE,)) + public


def parse_ec(serialized: object) -> bytes:
    """The raw key of a serialized X25519 public key; :class:`InvalidKey` otherwise."""
    if type(serialized) is not bytes or len(serialized) != 33 or serialized[0] != EC_TYPE:
        raise InvalidKey("not a serialized X25519 public key (0x05 || 32 bytes)")
    return serialized[1:]


def _version_byte(version: int) -> bytes:
    return bytes(((version << 4) | _WRITER_VERSION,))


def _read_version(data: bytes) -> int:
    if not data:
        raise DecodeError("empty libsignal message")
    version, writer = data[0] >> 4, data[0] & 0x0F
    if version not in (VERSION_X3DH, VERSION_PQXDH) or writer not in (3, 4):
        raise UnsupportedVersion(f"libsignal message version {version} is not 3 or 4")
    return version


def message_mac(
    mac_key: bytes, sender_identity: bytes, receiver_identity: bytes, body: bytes
) -> bytes:
    """HMAC-SHA256(mac key, 0x05||sender IK || 0x05||receiver IK || body), first 8 bytes."""
    h = hmac.HMAC(mac_key, _SHA256)
    h.update(serialize_ec(sender_identity))
    h.update(serialize_ec(receiver_identity))
    h.update(body)
    return h.finalize()[:MAC_LEN]


@dataclass(frozen=True, slots=True)
class SignalMessage:
    """A parsed SignalMessage; ``serialized`` is the whole message, MAC included."""

    version: int
    ratchet_key: bytes
    counter: int
    previous_counter: int
    ciphertext: bytes
    pq_ratchet: bytes
    serialized: bytes

    def verify_mac(self, mac_key: bytes, sender_identity: bytes, receiver_identity: bytes) -> bool:
        """Whether the trailing 8-byte MAC is right (constant-time comparison)."""
        body, tag = self.serialized[:-MAC_LEN], self.serialized[-MAC_LEN:]
        expected = message_mac(mac_key, sender_identity, receiver_identity, body)
        return _hmac.compare_digest(expected, tag)


@dataclass(frozen=True, slots=True)
class PreKeySignalMessage:
    """A parsed PreKeySignalMessage (the first messages of a session, until answered)."""

    version: int
    registration_id: int
    prekey_id: int | None
    signed_prekey_id: int
    kyber_prekey_id: int | None
    kyber_ciphertext: bytes | None
    base_key: bytes
    identity_key: bytes
    message: SignalMessage
    serialized: bytes


def encode_signal_message(
    version: int,
    mac_key: bytes,
    ratchet_key: bytes,
    counter: int,
    previous_counter: int,
    ciphertext: bytes,
    sender_identity: bytes,
    receiver_identity: bytes,
    pq_ratchet: bytes = b"",
) -> bytes:
    """Serialize and MAC a SignalMessage exactly as libsignal does (``pq_ratchet``, the SPQR
    field, only when not empty)."""
    body = _version_byte(version) + proto.encode(
        _SIGNAL_SCHEMA,
        {
            1: serialize_ec(ratchet_key),
            2: counter,
            3: previous_counter,
            4: ciphertext,
            5: pq_ratchet or None,
        },
    )
    return body + message_mac(mac_key, sender_identity, receiver_identity, body)


def encode_prekey_message(
    version: int,
    registration_id: int,
    prekey_id: int | None,
    signed_prekey_id: int,
    kyber_prekey_id: int | None,
    kyber_ciphertext: bytes | None,
    base_key: bytes,
    identity_key: bytes,
    message: bytes,
) -> bytes:
    """Serialize a PreKeySignalMessage around an already serialized SignalMessage."""
    return _version_byte(version) + proto.encode(
        _PREKEY_SCHEMA,
        {
            1: prekey_id,
            2: serialize_ec(base_key),
            3: serialize_ec(identity_key),
            4: message,
            5: registration_id,
            6: signed_prekey_id,
            7: kyber_prekey_id,
            8: kyber_ciphertext,
        },
    )


def _check_size(data: object) -> bytes:
    if type(data) is not bytes:
        raise DecodeError("a libsignal message must be bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError("libsignal message too large")
    return data


def parse_signal_message(data: object) -> SignalMessage:
    """Parse a SignalMessage strictly; the MAC is checked later, with the message key."""
    raw = _check_size(data)
    if len(raw) < 1 + MAC_LEN:
        raise DecodeError("SignalMessage too short")
    version = _read_version(raw)
    fields = proto.decode(raw[1:-MAC_LEN], _SIGNAL_SCHEMA)
    ratchet_key, counter = fields.get(1), fields.get(2)
    ciphertext = fields.get(4)
    if ratchet_key is None or counter is None or ciphertext is None:
        raise DecodeError("SignalMessage lacks a required field")
    assert type(counter) is int and type(ciphertext) is bytes
    previous = fields.get(3, 0)
    pq = fields.get(5, b"")
    assert type(previous) is int and type(pq) is bytes
    try:
        key = parse_ec(ratchet_key)
    except InvalidKey:
        raise DecodeError("SignalMessage ratchet key is malformed") from None
    return SignalMessage(version, key, counter, previous, ciphertext, pq, raw)


def parse_prekey_message(data: object) -> PreKeySignalMessage:
    """Parse a PreKeySignalMessage and its inner SignalMessage strictly."""
    raw = _check_size(data)
    version = _read_version(raw)
    fields = proto.decode(raw[1:], _PREKEY_SCHEMA)
    base_key, identity_key = fields.get(2), fields.get(3)
    inner, spk_id = fields.get(4), fields.get(6)
    if base_key is None or identity_key is None or inner is None or spk_id is None:
        raise DecodeError("PreKeySignalMessage lacks a required field")
    assert type(spk_id) is int
    kyber_id, kyber_ct = fields.get(7), fields.get(8)
    if (kyber_id is None) != (kyber_ct is None):
        raise DecodeError("PreKeySignalMessage has half a Kyber payload")
    if (kyber_id is not None) != (version == VERSION_PQXDH):
        raise DecodeError("Kyber payload presence does not match the message version")
    if kyber_ct is not None:
        parse_ciphertext(kyber_ct)
    message = parse_signal_message(inner)
    if message.version != version:
        raise DecodeError("inner SignalMessage version differs from the PreKeySignalMessage's")
    try:
        base, identity = parse_ec(base_key), parse_ec(identity_key)
    except InvalidKey:
        raise DecodeError("PreKeySignalMessage key is malformed") from None
    prekey_id = fields.get(1)
    registration_id = fields.get(5, 0)
    assert (prekey_id is None or type(prekey_id) is int) and type(registration_id) is int
    assert (kyber_id is None or type(kyber_id) is int) and (
        kyber_ct is None or type(kyber_ct) is bytes
    )
    return PreKeySignalMessage(
        version,
        registration_id,
        prekey_id,
        spk_id,
        kyber_id,
        kyber_ct,
        base,
        identity,
        message,
        raw,
    )
