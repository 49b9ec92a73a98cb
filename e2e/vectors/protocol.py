"""Verifiers for the protocol's own vectors: kdf.json, agreement.json, frames.json and
transcripts.json, made by vectors/generate.py from an independent reference (SPEC.md §11).

Each verifier drives the package's real code paths (pure KDF functions, ``x3dh.initiate`` /
``respond``, ``decode_message``, ``Session``) with the case's keys and a deterministic RNG,
and compares every output byte for byte; negative cases must raise the named error class
and leave the state unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from e2e import errors
from e2e.chain_key import kdf_ck
from e2e.frame import decode_message
from e2e.keys import KemKeyPair, KeyPair
from e2e.message_key import open_, open_header, seal, seal_header
from e2e.prekeys import KemPrekey, LocalPrekeys, OneTimePrekey, PrekeyBundle, SignedPrekey
from e2e.root_key import root_step
from e2e.session import Session
from e2e.suite import Suite, get_suite
from e2e.vectors.registry import verifier
from e2e.x3dh import agreement_kdf, initiate, respond

__all__ = ["DRng"]


class DRng:
    """SPEC §11's deterministic RNG: SHA-256(seed | u64 counter) blocks, consumed in order."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buf = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buf) < n:
            block = self._seed + self._counter.to_bytes(8, "big")
            self._buf += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _b(value: Any) -> bytes:
    return bytes.fromhex(str(value))


def _opt(value: Any) -> bytes | None:
    return None if value is None else _b(value)


def _eq(what: str, got: bytes | None, want: Any) -> None:
    expected = _opt(want)
    assert got == expected, f"{what} differs"


def _expect_error(name: str, fn: Callable[[], object]) -> None:
    cls = getattr(errors, name)
    try:
        fn()
    except cls:
        return
    except errors.E2EError as exc:
        raise AssertionError(f"expected {name}, got {type(exc).__name__}") from None
    raise AssertionError(f"expected {name}, nothing was raised")


@verifier("kdf")
def verify_kdf(case: dict[str, Any]) -> None:
    kind = case["kind"]
    if kind == "root_step":
        rk, ck, nhk = root_step(get_suite(case["suite"]), _b(case["rk"]), _b(case["dh"]))
        _eq("next root key", rk, case["next_rk"])
        _eq("chain key", ck, case["ck"])
        _eq("next header key", nhk, case["nhk"])
    elif kind == "chain_step":
        nxt, mk = kdf_ck(get_suite(case["suite"]), _b(case["ck"]))
        _eq("next chain key", nxt, case["next_ck"])
        _eq("message key", mk, case["mk"])
    elif kind == "body":
        mk, ad, pt, nonce = _b(case["mk"]), _b(case["ad"]), _b(case["plaintext"]), _b(case["nonce"])
        _eq("sealed body", seal(mk, nonce, ad, pt), case["body"])
        _eq("opened body", open_(mk, mk[32:], nonce, ad, _b(case["body"])), case["plaintext"])
    elif kind == "header":
        hk, ad = _b(case["hk"]), _b(case["ad"])
        sealed = seal_header(hk, _b(case["nonce"]), ad, _b(case["header"]))
        _eq("sealed header", sealed, case["sealed"])
        _eq("opened header", open_header(hk, ad, sealed), case["header"])
    elif kind == "agreement_kdf":
        suite = get_suite(case["suite"])
        sk, hka, hkb = agreement_kdf(suite, _b(case["dhs"]), _b(case["ss"]), _b(case["binding"]))
        _eq("root key", sk, case["sk"])
        _eq("header key A", hka, case["hka"])
        _eq("header key B", hkb, case["hkb"])
    else:
        raise ValueError(f"unknown kdf case kind {kind!r}")


def _prekeys(setup: dict[str, Any], suite: Suite, bundle: PrekeyBundle) -> LocalPrekeys:
    """Bob's prekey source holding exactly the case's keys under the case's ids."""
    keys = LocalPrekeys(KeyPair.from_private_bytes(_b(setup["ik_b"])), suite)
    spk = SignedPrekey(
        setup["spk_id"], KeyPair.from_private_bytes(_b(setup["spk"])), bundle.spk_signature
    )
    keys.signed[spk.id] = spk
    if setup["opk"] is not None:
        opk = OneTimePrekey(setup["opk_id"], KeyPair.from_private_bytes(_b(setup["opk"])))
        keys.one_time[opk.id] = opk
    if setup["kem_seed"] is not None:
        assert bundle.kem_signature is not None
        kem = KemPrekey(
            setup["kem_id"], KemKeyPair.from_seed(_b(setup["kem_seed"])), bundle.kem_signature,
            last_resort=False,
        )  # fmt: skip
        keys.kem[kem.id] = kem
    return keys


def _encapsulate(setup: dict[str, Any]) -> Callable[[bytes], tuple[bytes, bytes]]:
    def encapsulate(public: bytes) -> tuple[bytes, bytes]:
        return _b(setup["ss"]), _b(setup["ct"])

    return encapsulate


def _allowed(case: dict[str, Any]) -> dict[str, Any]:
    allowed = case.get("allowed")
    return {} if allowed is None else {"allowed_suites": tuple(get_suite(i) for i in allowed)}


@verifier("agreement")
def verify_agreement(case: dict[str, Any]) -> None:
    setup = case["setup"]
    ik_a = KeyPair.from_private_bytes(_b(setup["ik_a"]))
    raw = _b(setup["bundle"])
    ek = _b(case["ek"])

    def run_initiator() -> tuple[Any, KeyPair]:
        bundle = PrekeyBundle.from_bytes(raw)
        assert bundle.to_bytes() == raw, "bundle re-encoding differs"
        return initiate(
            ik_a, bundle, rng=lambda n: ek[:n], encapsulate=_encapsulate(setup), **_allowed(case)
        )

    if case["error"] is not None:
        _expect_error(case["error"], run_initiator)
        return
    agreement, ek_pair = run_initiator()
    assert ek_pair.private_bytes() == ek
    _eq("root key", agreement.root_key, case["sk"])
    _eq("header key A", agreement.header_key_a, case["hka"])
    _eq("header key B", agreement.header_key_b, case["hkb"])
    _eq("associated data", agreement.ad, case["ad"])
    suite = get_suite(setup["suite"])
    bundle = PrekeyBundle.from_bytes(raw)
    keys = _prekeys(setup, suite, bundle)
    theirs, spk = respond(keys.identity, keys, suite, agreement.prekey, allowed_suites=(suite,))
    _eq("responder root key", theirs.root_key, case["sk"])
    _eq("responder header key A", theirs.header_key_a, case["hka"])
    _eq("responder header key B", theirs.header_key_b, case["hkb"])
    _eq("responder associated data", theirs.ad, case["ad"])


@verifier("frame")
def verify_frame(case: dict[str, Any]) -> None:
    raw = _b(case["raw"]) + bytes(int(case.get("zero_pad", 0)))
    if case["error"] is None:
        frame = decode_message(raw)
        assert frame.raw == raw
        assert raw[1:3] == bytes([0, 1]), "version is not the first key"
    else:
        _expect_error(case["error"], lambda: decode_message(raw))


@verifier("transcript")
def verify_transcript(case: dict[str, Any]) -> None:
    setup = case["setup"]
    suite = get_suite(setup["suite"])
    seed = str(setup["seed"]).encode()
    raw = _b(setup["bundle"])
    keys = _prekeys(setup, suite, PrekeyBundle.from_bytes(raw))
    alice = Session.initiate(
        KeyPair.from_private_bytes(_b(setup["ik_a"])),
        raw,
        allowed_suites=(suite,),
        rng=DRng(seed + b"/alice"),
        encapsulate=_encapsulate(setup),
    )
    sessions: dict[str, Session | None] = {"a": alice, "b": None}
    bob_rng = DRng(seed + b"/bob")
    for event in case["events"]:
        who = event["party"]
        session = sessions[who]
        if event["op"] == "send":
            assert session is not None
            _eq(f"frame {event['label']}", session.encrypt(_b(event["plaintext"])), event["frame"])
            frame = _b(event["frame"])
        elif event["op"] == "recv":
            frame = _transcript_frame(case, event["label"])
            if session is None:
                session, pt = Session.respond(
                    keys.identity, keys, frame, allowed_suites=(suite,), rng=bob_rng
                )
                sessions[who] = session
            else:
                pt = session.decrypt(frame)
            _eq(f"plaintext of {event['label']}", pt, event["plaintext"])
        else:
            assert session is not None
            before = session.to_bytes()
            bad = _b(event["frame"])
            _expect_error(event["error"], _decrypting(session, bad))
            assert session.to_bytes() == before, "a rejected frame changed the state"


def _decrypting(session: Session, frame: bytes) -> Callable[[], bytes]:
    return lambda: session.decrypt(frame)


def _transcript_frame(case: dict[str, Any], label: str) -> bytes:
    for event in case["events"]:
        if event["op"] == "send" and event["label"] == label:
            return _b(event["frame"])
    raise KeyError(label)
