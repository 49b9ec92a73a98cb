"""SPQR's key-agreement state machine, the chunked ML-KEM Braid (SPEC.md §15.7.6).

Each epoch one party is the *send_ek* side (it samples an ML-KEM-768 key pair and sends its
header and encapsulation-key vector in chunks) and the other the *send_ct* side (it
encapsulates in two parts and sends ``ct1`` and ``ct2 || MAC`` in chunks); the roles swap
every epoch. The initiator starts as send_ek in :class:`KeysUnsampled`, the responder as
send_ct in :class:`NoHeaderReceived`, both at epoch 1. Every send emits one message; the
send_ct side learns the epoch's secret when it sends its first ``ct1`` chunk, the send_ek
side when it has received all of ``ct2``.

The transitions are libsignal's (0.92 and 0.103, observed on the wire), which differ from the
published ML-KEM Braid text in three places: :class:`EkSentCt1Received` sends ``Ct1Ack``
(not ``None``), :class:`EkReceivedCt1Sampled` also moves on with ``Ct1Ack`` and
:class:`Ct1Acknowledged` also takes plain ``Ek`` chunks; a message of a later epoch is an
error except in :class:`Ct2Sampled`. A message of an earlier epoch changes nothing.

States are immutable values: :func:`send` and :func:`receive` return the next state, so a
caller keeps the old one until the message in question has been accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from e2e.errors import DecodeError, PqRatchetError, StateError
from e2e.keys import Rng, checked_rng
from e2e.libsignal.spqr import mlkem768
from e2e.libsignal.spqr.erasure import CHUNK_BYTES, Decoder, Encoder
from e2e.libsignal.spqr.kdf import MAC_LEN, Authenticator, epoch_secret
from e2e.libsignal.spqr.message import MsgType

__all__ = [
    "KeysUnsampled",
    "KeysSampled",
    "HeaderSent",
    "Ct1Received",
    "EkSentCt1Received",
    "NoHeaderReceived",
    "HeaderReceived",
    "Ct1Sampled",
    "EkReceivedCt1Sampled",
    "Ct1Acknowledged",
    "Ct2Sampled",
    "State",
    "Outgoing",
    "initial",
    "send",
    "receive",
    "to_obj",
    "from_obj",
]

HDR_BYTES: Final = mlkem768.HEADER_LEN + MAC_LEN  # 96: 3 chunks
EK_BYTES: Final = mlkem768.EK_VECTOR_LEN  # 1152: 36 chunks
CT1_BYTES: Final = mlkem768.CT1_LEN  # 960: 30 chunks
CT2_BYTES: Final = mlkem768.CT2_LEN + MAC_LEN  # 160: 5 chunks


# -- the send_ek side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class KeysUnsampled:
    epoch: int
    auth: Authenticator


@dataclass(frozen=True, slots=True, repr=False)
class KeysSampled:
    epoch: int
    auth: Authenticator
    seed: bytes
    hdr: Encoder


@dataclass(frozen=True, slots=True, repr=False)
class HeaderSent:
    epoch: int
    auth: Authenticator
    seed: bytes
    ek: Encoder
    ct1: Decoder


@dataclass(frozen=True, slots=True, repr=False)
class Ct1Received:
    epoch: int
    auth: Authenticator
    seed: bytes
    ek: Encoder
    ct1: bytes


@dataclass(frozen=True, slots=True, repr=False)
class EkSentCt1Received:
    epoch: int
    auth: Authenticator
    seed: bytes
    ct1: bytes
    ct2: Decoder


# -- the send_ct side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class NoHeaderReceived:
    epoch: int
    auth: Authenticator
    hdr: Decoder


@dataclass(frozen=True, slots=True, repr=False)
class HeaderReceived:
    epoch: int
    auth: Authenticator
    hdr: bytes


@dataclass(frozen=True, slots=True, repr=False)
class Ct1Sampled:
    epoch: int
    auth: Authenticator
    hdr: bytes
    m: bytes
    ct1: Encoder
    ek: Decoder


@dataclass(frozen=True, slots=True, repr=False)
class EkReceivedCt1Sampled:
    epoch: int
    auth: Authenticator
    hdr: bytes
    m: bytes
    ct1: Encoder
    ek: bytes


@dataclass(frozen=True, slots=True, repr=False)
class Ct1Acknowledged:
    epoch: int
    auth: Authenticator
    hdr: bytes
    m: bytes
    ct1: bytes
    ek: Decoder


@dataclass(frozen=True, slots=True, repr=False)
class Ct2Sampled:
    epoch: int
    auth: Authenticator
    ct2: Encoder


State = (
    KeysUnsampled
    | KeysSampled
    | HeaderSent
    | Ct1Received
    | EkSentCt1Received
    | NoHeaderReceived
    | HeaderReceived
    | Ct1Sampled
    | EkReceivedCt1Sampled
    | Ct1Acknowledged
    | Ct2Sampled
)


@dataclass(frozen=True, slots=True, repr=False)
class Outgoing:
    """What one send puts on the wire: the type and, for chunk types, (index, 32 bytes)."""

    type: MsgType
    chunk: tuple[int, bytes] | None = None


def initial(auth: Authenticator, initiator: bool) -> State:
    """Epoch 1: the initiator sends the first key (send_ek), the responder encapsulates."""
    if initiator:
        return KeysUnsampled(1, auth)
    return NoHeaderReceived(1, auth, Decoder(HDR_BYTES))


def _chunk(kind: MsgType, enc: Encoder) -> tuple[Encoder, Outgoing]:
    enc, index, data = enc.next_chunk()
    return enc, Outgoing(kind, (index, data))


def send(state: State, rng: Rng) -> tuple[State, Outgoing, bytes | None]:
    """(next state, the message's payload, the epoch secret this send produced or None).

    Draws randomness only in :class:`KeysUnsampled` (a 64-byte key seed) and
    :class:`HeaderReceived` (the 32-byte ``m`` of the encapsulation).
    """
    match state:
        case KeysUnsampled(epoch, auth):
            keys = mlkem768.KeyPair.generate(rng)
            tag = auth.header_mac(epoch, keys.header)
            enc, out = _chunk(MsgType.HDR, Encoder(keys.header + tag))
            return KeysSampled(epoch, auth, keys.seed, enc), out, None
        case KeysSampled(epoch, auth, seed, hdr):
            enc, out = _chunk(MsgType.HDR, hdr)
            return KeysSampled(epoch, auth, seed, enc), out, None
        case HeaderSent(epoch, auth, seed, ek, ct1):
            enc, out = _chunk(MsgType.EK, ek)
            return HeaderSent(epoch, auth, seed, enc, ct1), out, None
        case Ct1Received(epoch, auth, seed, ek, ct1_bytes):
            enc, out = _chunk(MsgType.EK_CT1_ACK, ek)
            return Ct1Received(epoch, auth, seed, enc, ct1_bytes), out, None
        case EkSentCt1Received():
            return state, Outgoing(MsgType.CT1_ACK), None
        case NoHeaderReceived() | Ct1Acknowledged():
            return state, Outgoing(MsgType.NONE), None
        case HeaderReceived(epoch, auth, hdr):
            m = checked_rng(rng)(mlkem768.M_LEN)
            ct1_bytes, shared = mlkem768.encaps1(hdr, m)
            secret = epoch_secret(shared, epoch)
            auth = auth.update(epoch, secret)
            enc, out = _chunk(MsgType.CT1, Encoder(ct1_bytes))
            return Ct1Sampled(epoch, auth, hdr, m, enc, Decoder(EK_BYTES)), out, secret
        case Ct1Sampled(epoch, auth, hdr, m, ct1, ek):
            enc, out = _chunk(MsgType.CT1, ct1)
            return Ct1Sampled(epoch, auth, hdr, m, enc, ek), out, None
        case EkReceivedCt1Sampled(epoch, auth, hdr, m, ct1, ek_bytes):
            enc, out = _chunk(MsgType.CT1, ct1)
            return EkReceivedCt1Sampled(epoch, auth, hdr, m, enc, ek_bytes), out, None
        case Ct2Sampled(epoch, auth, ct2):
            enc, out = _chunk(MsgType.CT2, ct2)
            return Ct2Sampled(epoch, auth, enc), out, None
    raise AssertionError(state)  # pragma: no cover - every state is matched above


def _ct2_sampled(epoch: int, auth: Authenticator, hdr: bytes, m: bytes, ct1: bytes,
                 ek: bytes) -> Ct2Sampled:  # fmt: skip
    ct2 = mlkem768.encaps2(hdr, m, ek)
    return Ct2Sampled(epoch, auth, Encoder(ct2 + auth.ciphertext_mac(epoch, ct1, ct2)))


def _ek_complete(hdr: bytes, ek: Decoder) -> bytes:
    vector = ek.message()
    if not mlkem768.ek_matches_header(hdr, vector):
        raise PqRatchetError("SPQR encapsulation key does not match its header")
    return vector


def receive(
    state: State, epoch: int, kind: MsgType, chunk: tuple[int, bytes] | None
) -> tuple[State, bytes | None]:
    """(next state, the epoch secret this message completed or None) for a received
    message of SPQR ``epoch`` carrying ``kind`` (and ``chunk``).

    :class:`PqRatchetError` for a later epoch (except the one :class:`Ct2Sampled` waits
    for), a header or ciphertext MAC that does not verify, or a key that does not match its
    header.
    """
    if epoch < state.epoch:
        return state, None
    if epoch > state.epoch:
        if isinstance(state, Ct2Sampled) and epoch == state.epoch + 1:
            return KeysUnsampled(epoch, state.auth), None
        raise PqRatchetError("SPQR message from a later epoch")
    is_ek = kind in (MsgType.EK, MsgType.EK_CT1_ACK)
    match state:
        case KeysSampled(ep, auth, seed, _) if kind == MsgType.CT1:
            assert chunk is not None
            vector = mlkem768.KeyPair.from_seed(seed).ek_vector
            return HeaderSent(ep, auth, seed, Encoder(vector), Decoder(CT1_BYTES).add(*chunk)), None
        case HeaderSent(ep, auth, seed, ek, ct1) if kind == MsgType.CT1:
            assert chunk is not None
            ct1 = ct1.add(*chunk)
            if ct1.complete:
                return Ct1Received(ep, auth, seed, ek, ct1.message()), None
            return HeaderSent(ep, auth, seed, ek, ct1), None
        case Ct1Received(ep, auth, seed, _, ct1_bytes) if kind == MsgType.CT2:
            assert chunk is not None
            return EkSentCt1Received(
                ep, auth, seed, ct1_bytes, Decoder(CT2_BYTES).add(*chunk)
            ), None
        case EkSentCt1Received(ep, auth, seed, ct1_bytes, ct2) if kind == MsgType.CT2:
            assert chunk is not None
            ct2 = ct2.add(*chunk)
            if not ct2.complete:
                return EkSentCt1Received(ep, auth, seed, ct1_bytes, ct2), None
            blob = ct2.message()
            ct2_bytes, tag = blob[: mlkem768.CT2_LEN], blob[mlkem768.CT2_LEN :]
            secret = epoch_secret(mlkem768.decapsulate(seed, ct1_bytes, ct2_bytes), ep)
            auth = auth.update(ep, secret)
            if not auth.ciphertext_ok(ep, ct1_bytes, ct2_bytes, tag):
                raise PqRatchetError("SPQR ciphertext MAC does not verify")
            return NoHeaderReceived(ep + 1, auth, Decoder(HDR_BYTES)), secret
        case NoHeaderReceived(ep, auth, hdr) if kind == MsgType.HDR:
            assert chunk is not None
            hdr = hdr.add(*chunk)
            if not hdr.complete:
                return NoHeaderReceived(ep, auth, hdr), None
            blob = hdr.message()
            header, tag = blob[: mlkem768.HEADER_LEN], blob[mlkem768.HEADER_LEN :]
            if not auth.header_ok(ep, header, tag):
                raise PqRatchetError("SPQR header MAC does not verify")
            return HeaderReceived(ep, auth, header), None
        case Ct1Sampled(ep, auth, hdr, m, ct1, ek) if is_ek:
            assert chunk is not None
            ek = ek.add(*chunk)
            if ek.complete:
                vector = _ek_complete(hdr, ek)
                if kind == MsgType.EK_CT1_ACK:
                    return _ct2_sampled(ep, auth, hdr, m, ct1.message, vector), None
                return EkReceivedCt1Sampled(ep, auth, hdr, m, ct1, vector), None
            if kind == MsgType.EK_CT1_ACK:
                return Ct1Acknowledged(ep, auth, hdr, m, ct1.message, ek), None
            return Ct1Sampled(ep, auth, hdr, m, ct1, ek), None
        case EkReceivedCt1Sampled(ep, auth, hdr, m, ct1, vector) if kind in (
            MsgType.CT1_ACK,
            MsgType.EK_CT1_ACK,
        ):
            return _ct2_sampled(ep, auth, hdr, m, ct1.message, vector), None
        case Ct1Acknowledged(ep, auth, hdr, m, ct1_bytes, ek) if is_ek:
            assert chunk is not None
            ek = ek.add(*chunk)
            if not ek.complete:
                return Ct1Acknowledged(ep, auth, hdr, m, ct1_bytes, ek), None
            return _ct2_sampled(ep, auth, hdr, m, ct1_bytes, _ek_complete(hdr, ek)), None
    return state, None


# -- serialization ---------------------------------------------------------------------------

_KINDS: Final[tuple[type, ...]] = (
    KeysUnsampled,
    KeysSampled,
    HeaderSent,
    Ct1Received,
    EkSentCt1Received,
    NoHeaderReceived,
    HeaderReceived,
    Ct1Sampled,
    EkReceivedCt1Sampled,
    Ct1Acknowledged,
    Ct2Sampled,
)
#: Per state, the kind of each field after (epoch, auth): "seed", "hdr" (64 bytes), "m",
#: an encoder or decoder of a given message size, or raw bytes of a given size.
_FIELDS: Final[dict[type, tuple[tuple[str, int], ...]]] = {
    KeysUnsampled: (),
    KeysSampled: (("bytes", mlkem768.SEED_LEN), ("enc", HDR_BYTES)),
    HeaderSent: (("bytes", mlkem768.SEED_LEN), ("enc", EK_BYTES), ("dec", CT1_BYTES)),
    Ct1Received: (("bytes", mlkem768.SEED_LEN), ("enc", EK_BYTES), ("bytes", CT1_BYTES)),
    EkSentCt1Received: (("bytes", mlkem768.SEED_LEN), ("bytes", CT1_BYTES), ("dec", CT2_BYTES)),
    NoHeaderReceived: (("dec", HDR_BYTES),),
    HeaderReceived: (("bytes", mlkem768.HEADER_LEN),),
    Ct1Sampled: (
        ("bytes", mlkem768.HEADER_LEN),
        ("bytes", mlkem768.M_LEN),
        ("enc", CT1_BYTES),
        ("dec", EK_BYTES),
    ),  # fmt: skip
    EkReceivedCt1Sampled: (
        ("bytes", mlkem768.HEADER_LEN),
        ("bytes", mlkem768.M_LEN),
        ("enc", CT1_BYTES),
        ("bytes", EK_BYTES),
    ),  # fmt: skip
    Ct1Acknowledged: (
        ("bytes", mlkem768.HEADER_LEN),
        ("bytes", mlkem768.M_LEN),
        ("bytes", CT1_BYTES),
        ("dec", EK_BYTES),
    ),  # fmt: skip
    Ct2Sampled: (("enc", CT2_BYTES),),
}
_MAX_COUNTER: Final = 2**32 - 1
_MAX_EPOCH: Final = 2**64 - 1


def to_obj(state: State) -> list[object]:
    """[kind, epoch, auth root, auth mac, fields...]: encoders as [message, sent], decoders
    as [[index, chunk]...] (CBOR-ready; secrets included: store it sealed)."""
    out: list[object] = [
        _KINDS.index(type(state)),
        state.epoch,
        state.auth.root_key,
        state.auth.mac_key,
    ]
    for name in state.__dataclass_fields__:
        if name in ("epoch", "auth"):
            continue
        value = getattr(state, name)
        if isinstance(value, Encoder):
            out.append([value.message, value.sent])
        elif isinstance(value, Decoder):
            out.append([[i, c] for i, c in value.chunks])
        else:
            out.append(value)
    return out


def _bytes(value: object, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise StateError("malformed SPQR state")
    return value


def from_obj(obj: object) -> State:
    """Inverse of :func:`to_obj`; :class:`StateError` on anything malformed."""
    if type(obj) is not list or len(obj) < 4:
        raise StateError("malformed SPQR state")
    f: list[Any] = obj
    kind, epoch = f[0], f[1]
    if type(kind) is not int or not 0 <= kind < len(_KINDS):
        raise StateError("unknown SPQR state")
    if type(epoch) is not int or not 1 <= epoch <= _MAX_EPOCH:
        raise StateError("malformed SPQR epoch")
    cls = _KINDS[kind]
    spec = _FIELDS[cls]
    if len(f) != 4 + len(spec):
        raise StateError("malformed SPQR state")
    args: list[object] = [epoch, Authenticator(_bytes(f[2], 32), _bytes(f[3], 32))]
    try:
        for (what, size), value in zip(spec, f[4:], strict=True):
            if what == "bytes":
                args.append(_bytes(value, size))
            elif what == "enc":
                message, sent = value
                if type(sent) is not int or not 0 <= sent <= _MAX_COUNTER:
                    raise StateError("malformed SPQR encoder")
                args.append(Encoder(_bytes(message, size), sent))
            else:
                chunks = tuple((i, _bytes(c, CHUNK_BYTES)) for i, c in value)
                if not all(type(i) is int for i, _ in chunks):
                    raise StateError("malformed SPQR decoder")
                args.append(Decoder(size, chunks))
    except (TypeError, ValueError, DecodeError):  # DecodeError: a decoder's own checks
        raise StateError("malformed SPQR state") from None
    return cls(*args)  # type: ignore[no-any-return]
