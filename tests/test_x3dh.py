"""X3DH / PQXDH: every rejection of the key agreement, with typed errors, and the responder's
prekeys unchanged after each one (the one-time prekey still usable afterwards)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from helpers import (
    LOW_ORDER,
    Pair,
    edit_frame,
    frame_fields,
    prekeys_snapshot,
    reencode,
    setup,
    signed_bundle,
)

from e2e import x3dh, xeddsa
from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    E2EError,
    InvalidKey,
    InvalidSignature,
    NonContributory,
    PrekeyReused,
    SuiteMismatch,
    UnknownPrekey,
    UnknownSuite,
)
from e2e.frame import K, decode_message
from e2e.keys import KEM_PUBLIC_LEN, KemKeyPair, KeyPair, encode_ec
from e2e.prekeys import LocalPrekeys, PrekeyBundle
from e2e.session import Session
from e2e.suite import PQ, Suite

BOTH = (PQ,)


def _flip(data: bytes, i: int = 0) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def reject_respond(pair: Pair, frame: bytes, error: type[E2EError], **kw: object) -> E2EError:
    """``respond`` must raise ``error`` and leave Bob's prekeys exactly as they were."""
    before = prekeys_snapshot(pair.bob_keys)
    allowed = kw.pop("allowed_suites", pair.allowed)
    with pytest.raises(error) as info:
        Session.respond(pair.bob_id, pair.bob_keys, frame, allowed_suites=allowed)  # type: ignore[arg-type]
    assert prekeys_snapshot(pair.bob_keys) == before
    return info.value


def accept_respond(pair: Pair, frame: bytes, plaintext: bytes) -> Session:
    """The untampered frame still works afterwards: nothing was consumed by the rejections."""
    bob, pt = pair.respond(frame)
    assert pt == plaintext
    assert pair.alice.decrypt(bob.encrypt(b"reply")) == b"reply"
    return bob


def initiate(pair_or_keys: LocalPrekeys, bundle: PrekeyBundle | bytes, suite: Suite) -> Session:
    return Session.initiate(KeyPair.generate(), bundle, allowed_suites=(suite,))


# --- baseline -----------------------------------------------------------------------------


def test_agreement_both_sides_derive_the_same_keys(suite: Suite) -> None:
    bob_id, alice_id = KeyPair.generate(), KeyPair.generate()
    keys = LocalPrekeys.generate(bob_id, suite)
    bundle = keys.bundle()
    a, ek = x3dh.initiate(alice_id, bundle, allowed_suites=(suite,))
    b, spk = x3dh.respond(bob_id, keys, suite, a.prekey, allowed_suites=(suite,))
    assert a.root_key == b.root_key and len(a.root_key) == 32
    assert a.header_key_a == b.header_key_a and a.header_key_b == b.header_key_b
    assert a.header_key_a is not None and a.header_key_b is not None
    assert a.ad == b.ad == b"\x05" + alice_id.public + b"\x05" + bob_id.public
    assert a.prekey.base_key == ek.public and spk.public == bundle.spk
    assert a.remote_identity == bob_id.public and b.remote_identity == alice_id.public
    # A fresh agreement against the same bundle uses a fresh base key and root key.
    a2, ek2 = x3dh.initiate(alice_id, bundle, allowed_suites=(suite,))
    assert ek2.public != ek.public and a2.root_key != a.root_key


def test_pq_agreement_without_one_time_prekey() -> None:
    pair = setup(PQ, use_one_time=False)
    fields = frame_fields(f := pair.alice.encrypt(b"x"))
    assert K.OPK_ID not in fields and K.KEM_ID in fields
    accept_respond(pair, f, b"x")


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [False, True], ids=["object", "bytes"])
def test_bad_spk_signature(suite: Suite, as_bytes: bool) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    good = keys.bundle()
    for bad in (
        replace(good, spk_signature=_flip(good.spk_signature, 5)),
        replace(good, spk_signature=_flip(good.spk_signature, 63)),
        replace(good, spk=KeyPair.generate().public),  # another SPK under the old signature
        replace(good, identity_key=KeyPair.generate().public),  # signed by someone else
    ):
        with pytest.raises(InvalidSignature):
            initiate(keys, bad.to_bytes() if as_bytes else bad, suite)
    initiate(keys, good.to_bytes() if as_bytes else good, suite)


@pytest.mark.parametrize("as_bytes", [False, True], ids=["object", "bytes"])
def test_bad_kem_prekey_signature(as_bytes: bool) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    good = keys.bundle()
    assert good.kem_signature is not None
    for bad in (
        replace(good, kem_signature=_flip(good.kem_signature, 7)),
        replace(good, kem_pk=KemKeyPair.generate().public),
        replace(good, kem_signature=good.spk_signature),
    ):
        with pytest.raises(InvalidSignature):
            initiate(keys, bad.to_bytes() if as_bytes else bad, PQ)


def test_suite2_signatures_are_bound_to_the_suite() -> None:
    """A suite-3 SPK signed libsignal's way (Encode_EC(SPK) alone, no prefix) does not verify:
    a libsignal signed prekey cannot be replayed into a suite-3 bundle."""
    pq = LocalPrekeys.generate(KeyPair.generate(), PQ)
    pq_bundle = pq.bundle()
    as_signal = signed_bundle(pq, spk=pq_bundle.spk)  # re-signed the PQ way: fine
    initiate(pq, as_signal, PQ)
    spk = KeyPair.generate().public
    unprefixed = xeddsa.sign(pq.identity.private_bytes(), encode_ec(spk), os.urandom(64))
    with pytest.raises(InvalidSignature):
        initiate(pq, replace(pq_bundle, spk=spk, spk_signature=unprefixed), PQ)


# --- non-contributory (low-order) DH ------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER, ids=[p.hex()[:8] + p.hex()[-2:] for p in LOW_ORDER])
@pytest.mark.parametrize("suite_", BOTH, ids=["PQ"])
def test_low_order_signed_prekey_validly_signed(point: bytes, suite_: Suite) -> None:
    """The bundle signature path: the SPK verifies, its DH output is all zeros."""
    keys = LocalPrekeys.generate(KeyPair.generate(), suite_)
    bundle = signed_bundle(keys, spk=point)
    bundle.verify()  # the signature really is valid
    with pytest.raises(NonContributory):
        initiate(keys, bundle, suite_)
    with pytest.raises(NonContributory):
        initiate(keys, bundle.to_bytes(), suite_)


@pytest.mark.parametrize("point", LOW_ORDER, ids=[p.hex()[:8] + p.hex()[-2:] for p in LOW_ORDER])
def test_low_order_one_time_prekey(point: bytes, suite: Suite) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    bundle = replace(keys.bundle(), opk=point)  # OPKs are not signed
    bundle.verify()
    with pytest.raises(NonContributory):
        initiate(keys, bundle.to_bytes(), suite)


@pytest.mark.parametrize("point", LOW_ORDER, ids=[p.hex()[:8] + p.hex()[-2:] for p in LOW_ORDER])
def test_low_order_identity_key_in_bundle(point: bytes, suite: Suite) -> None:
    """A low-order identity key cannot carry a valid XEdDSA signature: InvalidSignature first."""
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    bundle = replace(keys.bundle(), identity_key=point)
    with pytest.raises(InvalidSignature):
        initiate(keys, bundle.to_bytes(), suite)


@pytest.mark.parametrize("point", LOW_ORDER, ids=[p.hex()[:8] + p.hex()[-2:] for p in LOW_ORDER])
@pytest.mark.parametrize("field", ["base_key", "identity"])
def test_low_order_keys_in_prekey_message(point: bytes, field: str, suite: Suite) -> None:
    """The responder path: a prekey message whose base key or identity key is low-order."""
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    reject_respond(pair, edit_frame(frame, **{field: point}), NonContributory)
    accept_respond(pair, frame, b"m0")


# --- key type and length ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["identity_key", "spk", "opk"])
@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_length_x25519_keys(field: str, size: int, suite: Suite) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    bad = replace(keys.bundle(), **{field: os.urandom(size)})
    with pytest.raises(InvalidKey):  # a decoded (or hand-built) bundle object
        initiate(keys, bad, suite)
    with pytest.raises(DecodeError):  # on the wire the decoder refuses it
        PrekeyBundle.from_bytes(bad.to_bytes())
    with pytest.raises(DecodeError):
        initiate(keys, bad.to_bytes(), suite)


@pytest.mark.parametrize("field", ["identity_key", "spk", "opk", "kem_pk"])
def test_wrong_key_types_in_a_bundle_object(field: str, suite: Suite) -> None:
    """Hand-built bundle objects with keys that are not bytes: InvalidKey, never a crash."""
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    size = KEM_PUBLIC_LEN if field == "kem_pk" else 32
    for value in ("a" * size, bytearray(size), memoryview(bytes(size)), size, [0] * size):
        with pytest.raises(InvalidKey):
            initiate(keys, replace(keys.bundle(), **{field: value}), suite)


def test_kem_key_where_an_ec_key_belongs_and_vice_versa() -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    bundle = keys.bundle()
    assert bundle.kem_pk is not None
    with pytest.raises(InvalidKey):
        initiate(keys, replace(bundle, spk=bundle.kem_pk), PQ)
    with pytest.raises(InvalidKey):
        initiate(keys, signed_bundle(keys, kem_pk=bundle.spk), PQ)


@pytest.mark.parametrize("size", [0, 32, KEM_PUBLIC_LEN - 1, KEM_PUBLIC_LEN + 1])
def test_wrong_length_kem_key(size: int) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    bad = signed_bundle(keys, kem_pk=os.urandom(size))
    with pytest.raises(InvalidKey):
        initiate(keys, bad, PQ)
    with pytest.raises(DecodeError):
        initiate(keys, bad.to_bytes(), PQ)


@pytest.mark.parametrize("fill", [b"\xff", b"\x0d\x0d\x0d"], ids=["all-ff", "coeff-3341"])
def test_malformed_kem_key_validly_signed(fill: bytes) -> None:
    """1568 bytes whose coefficients are not reduced mod q: not an encapsulation key."""
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    malformed = (fill * KEM_PUBLIC_LEN)[:KEM_PUBLIC_LEN]
    bad = signed_bundle(keys, kem_pk=malformed)
    bad.verify()
    with pytest.raises(InvalidKey):
        initiate(keys, bad, PQ)
    with pytest.raises(InvalidKey):
        initiate(keys, bad.to_bytes(), PQ)


def test_pq_bundle_object_without_kem_prekey() -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    bad = replace(keys.bundle(), kem_id=None, kem_pk=None, kem_signature=None)
    with pytest.raises(InvalidKey):
        initiate(keys, bad, PQ)
    with pytest.raises(DecodeError):
        PrekeyBundle.from_bytes(bad.to_bytes())


def test_signature_of_wrong_length_is_a_decode_error(suite: Suite) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    fields = frame_fields(keys.bundle().to_bytes())
    for size in (0, 63, 65):
        with pytest.raises(DecodeError):
            PrekeyBundle.from_bytes(reencode({**fields, K.SPK_SIG: os.urandom(size)}))
        with pytest.raises(DecodeError):
            PrekeyBundle.from_bytes(reencode({**fields, K.KEM_SIG: os.urandom(size)}))


def test_bundle_one_time_fields_must_be_complete(suite: Suite) -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), suite)
    fields = frame_fields(keys.bundle().to_bytes())
    for key in (K.OPK, K.OPK_ID):
        with pytest.raises(DecodeError):
            PrekeyBundle.from_bytes(reencode({k: v for k, v in fields.items() if k != key}))


@pytest.mark.parametrize("field", ["base_key", "identity"])
@pytest.mark.parametrize("size", [31, 33])
def test_prekey_message_key_of_wrong_length(field: str, size: int, suite: Suite) -> None:
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    reject_respond(pair, edit_frame(frame, **{field: os.urandom(size)}), DecodeError)
    accept_respond(pair, frame, b"m0")


def test_prekey_message_kem_ciphertext_of_wrong_length() -> None:
    pair = setup(PQ)
    frame = pair.alice.encrypt(b"m0")
    ct = frame_fields(frame)[K.KEM_CT]
    for bad in (ct[:-1], ct + b"\x00", b""):
        reject_respond(pair, edit_frame(frame, kem_ct=bad), DecodeError)
    reject_respond(pair, edit_frame(frame, kem_ct=None), DecodeError)
    reject_respond(pair, edit_frame(frame, kem_id=None), DecodeError)
    reject_respond(pair, edit_frame(frame, kem_id=None, kem_ct=None), DecodeError)
    accept_respond(pair, frame, b"m0")


def test_respond_to_a_plain_message_is_refused(suite: Suite) -> None:
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    bob, _ = pair.respond(frame)
    later = bob.encrypt(b"to alice")
    pair.alice.decrypt(later)
    plain = pair.alice.encrypt(b"plain")  # Alice heard back: no prekey fields any more
    assert K.BASE_KEY not in frame_fields(plain)
    reject_respond(pair, plain, DecodeError)


# --- prekey reuse -------------------------------------------------------------------------


def test_one_time_prekey_reused(suite: Suite) -> None:
    pair = setup(suite)
    bundle = pair.bob_keys.bundle().to_bytes()
    first = pair.alice.encrypt(b"one")
    accept_respond(pair, first, b"one")
    # A second initiator with the same (stale) bundle, hence the same one-time prekey.
    other = Session.initiate(KeyPair.generate(), bundle, allowed_suites=pair.allowed)
    reject_respond(pair, other.encrypt(b"two"), PrekeyReused)
    # The very same first message again is a replay of a used one-time prekey too.
    reject_respond(pair, first, PrekeyReused)


def test_one_time_kem_prekey_reused_without_one_time_ec_prekey() -> None:
    pair = setup(PQ)
    bundle = replace(pair.bob_keys.bundle(), opk_id=None, opk=None)
    kem = pair.bob_keys.kem[bundle.kem_id or 0]
    assert not kem.last_resort
    a1 = Session.initiate(KeyPair.generate(), bundle, allowed_suites=(PQ,))
    a2 = Session.initiate(KeyPair.generate(), bundle, allowed_suites=(PQ,))
    pair.respond(a1.encrypt(b"one"))
    reject_respond(pair, a2.encrypt(b"two"), PrekeyReused)


def test_last_resort_kem_prekey_reuse() -> None:
    pair = setup(PQ, use_one_time=False)
    bundle = pair.bob_keys.bundle(use_one_time=False)
    assert bundle.opk is None and pair.bob_keys.kem[bundle.kem_id or 0].last_resort
    first = pair.alice.encrypt(b"one")
    accept_respond(pair, first, b"one")
    # The same base key on the same last-resort key: a replay.
    reject_respond(pair, first, PrekeyReused)
    # A different base key on the same last-resort key is fine, as often as needed.
    for i in range(3):
        other = Session.initiate(KeyPair.generate(), bundle, allowed_suites=(PQ,))
        frame = other.encrypt(b"again %d" % i)
        bob, pt = pair.respond(frame)
        assert pt == b"again %d" % i
        assert other.decrypt(bob.encrypt(b"ok")) == b"ok"
        reject_respond(pair, frame, PrekeyReused)
    reject_respond(pair, first, PrekeyReused)


# --- unknown prekeys ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["spk_id", "opk_id", "kem_id"])
@pytest.mark.parametrize("value", [0, 999, 2**32 - 1])
def test_unknown_prekey_ids(field: str, value: int, suite: Suite) -> None:
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    reject_respond(pair, edit_frame(frame, **{field: value}), UnknownPrekey)
    accept_respond(pair, frame, b"m0")


# --- suites and the downgrade guard -------------------------------------------------------


def test_suite_not_allowed_on_initiate() -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    for bundle in (keys.bundle(), keys.bundle().to_bytes()):
        with pytest.raises(SuiteMismatch):
            Session.initiate(KeyPair.generate(), bundle, allowed_suites=())
        Session.initiate(KeyPair.generate(), bundle)  # the default policy: PQ


def test_suite_not_allowed_on_respond(suite: Suite) -> None:
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    reject_respond(pair, frame, SuiteMismatch, allowed_suites=())
    accept_respond(pair, frame, b"m0")


def test_pq_bundle_relabelled_as_suite1() -> None:
    """The downgrade guard: suite 1 (libsignal's schedule in e2e frames) is retired, so a
    bundle relabelled to it, with or without its KEM fields, is an UnknownSuite; so is one
    relabelled to suite 2 (the key schedule suite 3 replaced)."""
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    raw = keys.bundle().to_bytes()
    fields = frame_fields(raw)
    assert raw[3:5] == b"\x01\x03"  # key 1 (suite) = 3, right after the version
    stripped = {k: v for k, v in fields.items() if k not in (K.KEM_ID, K.KEM_PK, K.KEM_SIG)}
    for relabelled in (
        reencode({**stripped, K.SUITE: 1}),
        reencode({**fields, K.SUITE: 1}),
        reencode({**fields, K.SUITE: 2}),
    ):
        with pytest.raises(UnknownSuite):
            PrekeyBundle.from_bytes(relabelled)
        with pytest.raises(UnknownSuite):
            Session.initiate(KeyPair.generate(), relabelled)
    # Stripped but not relabelled: not a valid suite-3 bundle.
    with pytest.raises(DecodeError):
        PrekeyBundle.from_bytes(reencode(stripped))


def test_pq_prekey_message_relabelled_as_suite1() -> None:
    pair = setup(PQ)
    frame = pair.alice.encrypt(b"m0")
    stripped = edit_frame(frame, suite=1, kem_id=None, kem_ct=None)
    reject_respond(pair, stripped, UnknownSuite, allowed_suites=(PQ,))
    # Cut down to the retired suite-1 shape (40-byte clear header): still unknown.
    header = frame_fields(frame)[K.HEADER]
    reject_respond(pair, edit_frame(stripped, header=header[:40]), UnknownSuite)
    reject_respond(pair, edit_frame(frame, suite=1), UnknownSuite)
    accept_respond(pair, frame, b"m0")


# --- binding: every prekey-message field is bound into the first message --------------


def test_kem_ciphertext_is_bound() -> None:
    pair = setup(PQ)
    frame = pair.alice.encrypt(b"m0")
    ct = frame_fields(frame)[K.KEM_CT]
    for i in (0, 1, 777, len(ct) - 1):
        reject_respond(pair, edit_frame(frame, kem_ct=_flip(ct, i)), AuthenticationFailed)
    # Another well-formed ciphertext to the same KEM key.
    kem_pk = pair.bob_keys.kem[frame_fields(frame)[K.KEM_ID]].pair.public
    from e2e.keys import kem_encapsulate

    _, other_ct = kem_encapsulate(kem_pk)
    reject_respond(pair, edit_frame(frame, kem_ct=other_ct), AuthenticationFailed)
    accept_respond(pair, frame, b"m0")


def test_prekey_message_fields_are_bound(suite: Suite) -> None:
    pair = setup(suite)
    keys = pair.bob_keys
    spk2 = keys.add_signed_prekey()  # a second valid SPK id Bob holds
    frame = pair.alice.encrypt(b"m0")
    f = frame_fields(frame)
    other_opk = next(i for i in keys.one_time if i != f[K.OPK_ID])
    changes: list[dict[str, object]] = [
        {"identity": KeyPair.generate().public},
        {"base_key": KeyPair.generate().public},
        {"spk_id": spk2.id},
        {"opk_id": other_opk},
        {"opk_id": None},
    ]
    other_kem = next(i for i in keys.kem if i != f[K.KEM_ID])
    changes.append({"kem_id": other_kem})
    for change in changes:
        reject_respond(pair, edit_frame(frame, **change), AuthenticationFailed)
    accept_respond(pair, frame, b"m0")


def test_tampered_first_message_consumes_nothing(suite: Suite) -> None:
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    for i in (len(frame) - 1, len(frame) - 20, len(frame) // 2):
        reject_respond(pair, _flip(frame, i), E2EError)
    reject_respond(pair, frame[:-1], E2EError)
    reject_respond(pair, frame + b"\x00", E2EError)
    accept_respond(pair, frame, b"m0")


def test_first_message_for_another_identity(suite: Suite) -> None:
    """Bob's prekeys answered with Carol's identity key: nothing decrypts, nothing consumed."""
    pair = setup(suite)
    frame = pair.alice.encrypt(b"m0")
    before = prekeys_snapshot(pair.bob_keys)
    with pytest.raises(AuthenticationFailed):
        Session.respond(KeyPair.generate(), pair.bob_keys, frame, allowed_suites=pair.allowed)
    assert prekeys_snapshot(pair.bob_keys) == before
    accept_respond(pair, frame, b"m0")


def test_decode_message_sees_prekey_fields(suite: Suite) -> None:
    pair = setup(suite)
    frame = decode_message(pair.alice.encrypt(b"m0"))
    assert frame.prekey is not None and frame.suite is suite
    assert frame.prekey.identity_key == pair.alice_id.public
    assert frame.prekey.kem_ciphertext is not None
